"""Session fixtures for real message brokers: nats-server (JetStream) and rabbitmq-server."""
