import ServiceLifecycle

/// An RPC server runs as a `Service`: see ``RabbitMQRPCServer/run()`` for what graceful
/// shutdown does. In a `ServiceGroup`, put it after the connection (which must close last) and
/// before the RPC clients of the same process that call it, so that it still answers while
/// they drain.
extension RabbitMQRPCServer: Service {}
