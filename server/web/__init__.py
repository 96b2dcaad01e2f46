"""The dashboard: server-rendered pages for release engineers and testers (docs/dashboard.md).

`install_dashboard(app, settings)` adds its routes; pages sign in with a form and a session
cookie (`server.web.cookie`), never with a token in the URL."""
