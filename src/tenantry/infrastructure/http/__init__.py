"""HTTP: the API server's connections, and outbound deliveries."""
