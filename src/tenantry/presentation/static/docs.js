// The API docs page's start: Swagger UI on the served spec. A file of its own, not inline,
// so that the page's Content-Security-Policy allows scripts from 'self' only.
window.ui = SwaggerUIBundle({
  url: "/docs/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
});
