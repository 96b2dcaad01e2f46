"""Who gets what when: service functions over a SQLAlchemy Session, callable from the HTTP
routes, the MQTT bridge, the tests and the demo alike. Each one commits its own unit of work.

Import each service from its module: this package imports nothing, so the pure rules
(`rollout_rules`, `train_rules`) load without SQLAlchemy, e.g. for `server.api_models`."""
