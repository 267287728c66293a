// The client against a real `tenantry dev` (TENANTRY_URL; tests/e2e/test_typescript_client.py
// starts one and runs these): what a frontend does, end to end.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, test } from "node:test";

import { ProblemError, Tenantry, problemOf, taskEvents, type Session } from "../src/index.js";

const baseUrl = process.env["TENANTRY_URL"] ?? "http://127.0.0.1:8000";
const slug = `ts-${randomUUID().slice(0, 8)}`;
const password = "correct horse battery 9";

describe("the Tenantry client", () => {
  const sessions: (Session | undefined)[] = [];
  const tenantry = new Tenantry({ baseUrl, onSession: (session) => sessions.push(session) });

  before(async () => {
    const { data, error, response } = await tenantry.api.POST("/api/v1/tenants", {
      body: {
        name: "TypeScript",
        slug,
        owner: { username: "olive", email: `olive@${slug}.example`, password },
      },
    });
    if (data === undefined) problemOf(error);
    assert.equal(response.status, 201);
    assert.ok(response.headers.get("Location")?.endsWith(data.tenant.id));
    await tenantry.signIn(slug, "olive", password);
  });

  test("signs in and reads who it is", async () => {
    const { data } = await tenantry.api.GET("/api/v1/auth/me");
    assert.equal(data?.username, "olive");
    assert.deepEqual(data?.roles, ["owner"]);
  });

  test("refreshes a stale access token once and repeats the request", async () => {
    const session = tenantry.session;
    assert.ok(session);
    // What an expired token looks like to the server: refused.
    const stale = new Tenantry({
      baseUrl,
      session: { accessToken: "expired", refreshToken: session.refreshToken },
    });
    const [first, second] = await Promise.all([
      stale.api.GET("/api/v1/auth/me"),
      stale.api.GET("/api/v1/projects"),
    ]);
    assert.equal(first.data?.username, "olive");
    assert.equal(second.response.status, 200);
    // One refresh for both: the refresh token was used once, and is now replaced.
    assert.notEqual(stale.session?.refreshToken, session.refreshToken);
    // The original session's refresh token is spent: presenting it again ends its family.
    const replayed = await tenantry.refresh();
    assert.equal(replayed, undefined);
    assert.equal(sessions.at(-1), undefined);
    await tenantry.signIn(slug, "olive", password);
  });

  test("edits a project with ETags and reads a stale write as a problem", async () => {
    const created = await tenantry.api.POST("/api/v1/projects", { body: { name: "Apollo" } });
    if (created.data === undefined) problemOf(created.error);
    const project = created.data;
    assert.equal(created.response.status, 201);
    const etag = created.response.headers.get("ETag");
    assert.equal(etag, '"1"');
    const location = created.response.headers.get("Location");
    assert.equal(location, `/api/v1/projects/${project.id}`);

    const path = { project_id: project.id };
    const renamed = await tenantry.api.PATCH("/api/v1/projects/{project_id}", {
      params: { path, header: { "If-Match": etag } },
      body: { name: "Artemis" },
    });
    assert.equal(renamed.data?.name, "Artemis");
    assert.equal(renamed.data?.version, 2);

    const stale = await tenantry.api.PATCH("/api/v1/projects/{project_id}", {
      params: { path, header: { "If-Match": etag } },
      body: { name: "Gemini" },
    });
    assert.equal(stale.response.status, 412);
    assert.throws(() => problemOf(stale.error), (error: unknown) => {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.type, "urn:tenantry:problem:precondition-failed");
      assert.equal(error.problem.request_id, stale.response.headers.get("X-Request-ID"));
      return true;
    });

    const document = await tenantry.api.POST("/api/v1/projects/{project_id}/documents", {
      params: { path },
      body: { title: "Plan", content: "Land.", metadata: { stage: 1 } },
    });
    assert.equal(document.response.status, 201);
    const page = await tenantry.api.GET("/api/v1/projects/{project_id}/documents", {
      params: { path, query: { limit: 10 } },
    });
    assert.equal(page.data?.total, 1);
    assert.equal(page.data?.items[0]?.title, "Plan");

    const gone = await tenantry.api.DELETE("/api/v1/projects/{project_id}", { params: { path } });
    assert.equal(gone.response.status, 204);
    const missing = await tenantry.api.GET("/api/v1/projects/{project_id}", { params: { path } });
    assert.equal(missing.response.status, 404);
    assert.equal(missing.error?.type, "urn:tenantry:problem:not-found");
  });

  test("uploads a file and downloads its bytes", async () => {
    const text = `hello from TypeScript ${randomUUID()}\n`;
    const form = new FormData();
    form.append("file", new Blob([text], { type: "text/plain" }), "hello.txt");
    const uploaded = await tenantry.api.POST("/api/v1/files", {
      // The body is the form as it is: openapi-fetch sends FormData unchanged.
      body: form as never,
      bodySerializer: (body) => body as unknown as FormData,
    });
    if (uploaded.data === undefined) problemOf(uploaded.error);
    assert.equal(uploaded.data.size, new TextEncoder().encode(text).length);
    const content = await tenantry.api.GET("/api/v1/files/{file_id}/content", {
      params: { path: { file_id: uploaded.data.id } },
      parseAs: "text",
    });
    assert.equal(content.data, text);
  });

  test("submits a task and follows it to its end over server-sent events", async () => {
    const submitted = await tenantry.api.POST("/api/v1/tasks", { body: { type: "noop" } });
    if (submitted.data === undefined) problemOf(submitted.error);
    assert.equal(submitted.response.status, 202);
    const statuses: string[] = [];
    for await (const task of taskEvents(tenantry, submitted.data.id)) {
      statuses.push(task.status);
    }
    assert.equal(statuses.at(-1), "completed");
  });

  test("reads a refusal by its problem type", async () => {
    const refused = await tenantry.api.POST("/api/v1/projects", { body: { name: " " } });
    assert.equal(refused.response.status, 422);
    assert.equal(refused.error?.type, "urn:tenantry:problem:unprocessable-entity");
    assert.equal(refused.error?.errors?.[0]?.field, "name");
  });
});
