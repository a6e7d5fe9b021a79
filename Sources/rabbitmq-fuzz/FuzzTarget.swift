@_spi(Fuzzing) import RabbitMQ

/// One fuzz input: its first byte picks the path, the rest is that path's input.
///
/// - 0: an encoded field table, decoded by rabbitmq-c, converted to Swift, re-encoded.
/// - 1: encoded basic properties, the same way.
/// - 2: bytes from a broker, read frame by frame by rabbitmq-c and converted as the I/O
///   loop converts them (the next byte sets the size of the reads).
/// - 3: a Swift field table built from the bytes, encoded and decoded back.
/// - 4: a publish built from the bytes (properties, body, frame_max), encoded by the frame
///   writer, sent through a socket pair and read back by rabbitmq-c.
/// - 5: a request with names and an arguments table built from the bytes, checked, encoded
///   by the frame writer and read back by rabbitmq-c.
///
/// Returns nil, or what went wrong.
func fuzzOne(_ data: UnsafeRawBufferPointer) -> String? {
    guard let selector = data.first else { return nil }
    var input = FuzzInput(UnsafeRawBufferPointer(rebasing: data.dropFirst()))
    switch selector % 6 {
    case 0:
        return RabbitMQFuzzSupport.decodeTable(input.remaining)
    case 1:
        return RabbitMQFuzzSupport.decodeProperties(input.remaining)
    case 2:
        let chunking = input.byte()
        return RabbitMQFuzzSupport.decodeFrames(input.remaining, chunking: chunking)
    case 3:
        return RabbitMQFuzzSupport.roundTrip(input.table())
    case 5:
        let frameMax = [4096, 8192, 131_072][Int(input.byte() % 3)]
        let kind = input.byte()
        let names = [input.shortString(), input.shortString(), input.shortString()]
        return RabbitMQFuzzSupport.request(kind: kind, names: names, arguments: input.table(), frameMax: frameMax)
    default:
        let frameMax = [4096, 8192, 131_072][Int(input.byte() % 3)]
        let mandatory = input.bool()
        let properties = input.properties()
        let body = input.raw(count: Int(input.integer(UInt16.self)) % 12_000)
        return RabbitMQFuzzSupport.publish(properties, body: body, mandatory: mandatory, frameMax: frameMax)
    }
}
