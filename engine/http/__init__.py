"""The channel API over HTTP: the app factory and its resources, middlewares,
channel and operator authentication, the routes, the OpenAPI document."""
