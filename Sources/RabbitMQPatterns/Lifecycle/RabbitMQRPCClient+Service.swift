import ServiceLifecycle

/// An RPC client runs as a `Service`: see ``RabbitMQRPCClient/run()`` for what graceful
/// shutdown does. In a `ServiceGroup`, put it after the connection and before the services
/// that make calls, so that it drains after they have stopped calling.
extension RabbitMQRPCClient: Service {}
