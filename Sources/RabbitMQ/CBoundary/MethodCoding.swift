import CRabbitMQ

/// The one place methods are turned into rabbitmq-c structures and back.
extension ScratchPool {
    /// Builds the C structure of `method` in this pool (and on the stack) and passes it to
    /// `body` with its method number; valid only inside `body`.
    func withCMethod<Result>(
        _ method: OutboundMethod, _ body: (amqp_method_number_t, UnsafeMutableRawPointer) -> Result
    ) -> Result {
        defer { recycle() }
        func pass<T>(_ id: AMQPMethodID, _ value: T) -> Result {
            var value = value
            return withUnsafeMutableBytes(of: &value) { body(amqp_method_number_t(id.rawValue), $0.baseAddress!) }
        }
        switch method {
        case .channelOpen:
            return pass(.channelOpen, amqp_channel_open_t(out_of_band: amqp_bytes_t(len: 0, bytes: nil)))
        case .channelClose(let code, let text):
            return pass(.channelClose, amqp_channel_close_t(reply_code: code, reply_text: bytes(text), class_id: 0, method_id: 0))
        case .channelCloseOk:
            return pass(.channelCloseOk, amqp_channel_close_ok_t(dummy: 0))
        case .connectionClose(let code, let text):
            return pass(.connectionClose, amqp_connection_close_t(reply_code: code, reply_text: bytes(text), class_id: 0, method_id: 0))
        case .connectionCloseOk:
            return pass(.connectionCloseOk, amqp_connection_close_ok_t(dummy: 0))
        case .connectionUpdateSecret:
            // rabbitmq-c 0.11 has no encoder for it: CConnection.send encodes it by hand.
            preconditionFailure("connection.update-secret is encoded by the frame writer")
        case .basicConsume(let request):
            return pass(
                .basicConsume,
                amqp_basic_consume_t(
                    ticket: 0, queue: bytes(request.queue), consumer_tag: bytes(request.consumerTag), no_local: 0,
                    no_ack: request.noAck ? 1 : 0, exclusive: request.exclusive ? 1 : 0, nowait: 0,
                    arguments: table(request.arguments)))
        case .basicCancel(let tag):
            return pass(.basicCancel, amqp_basic_cancel_t(consumer_tag: bytes(tag), nowait: 0))
        case .basicAck(let tag, let multiple):
            return pass(.basicAck, amqp_basic_ack_t(delivery_tag: tag, multiple: multiple ? 1 : 0))
        case .basicNack(let tag, let multiple, let requeue):
            return pass(.basicNack, amqp_basic_nack_t(delivery_tag: tag, multiple: multiple ? 1 : 0, requeue: requeue ? 1 : 0))
        case .basicReject(let tag, let requeue):
            return pass(.basicReject, amqp_basic_reject_t(delivery_tag: tag, requeue: requeue ? 1 : 0))
        case .request(let request):
            return withCRequest(request, body)
        }
    }

    private func withCRequest<Result>(
        _ request: ChannelRequest, _ body: (amqp_method_number_t, UnsafeMutableRawPointer) -> Result
    ) -> Result {
        func pass<T>(_ id: AMQPMethodID, _ value: T) -> Result {
            var value = value
            return withUnsafeMutableBytes(of: &value) { body(amqp_method_number_t(id.rawValue), $0.baseAddress!) }
        }
        switch request {
        case .exchangeDeclare(let name, let type, let passive, let durable, let autoDelete, let isInternal, let arguments):
            return pass(
                .exchangeDeclare,
                amqp_exchange_declare_t(
                    ticket: 0, exchange: bytes(name), type: bytes(type), passive: passive ? 1 : 0, durable: durable ? 1 : 0,
                    auto_delete: autoDelete ? 1 : 0, internal: isInternal ? 1 : 0, nowait: 0, arguments: table(arguments)))
        case .exchangeDelete(let name, let ifUnused):
            return pass(.exchangeDelete, amqp_exchange_delete_t(ticket: 0, exchange: bytes(name), if_unused: ifUnused ? 1 : 0, nowait: 0))
        case .exchangeBind(let destination, let source, let key, let arguments):
            return pass(
                .exchangeBind,
                amqp_exchange_bind_t(
                    ticket: 0, destination: bytes(destination), source: bytes(source), routing_key: bytes(key), nowait: 0,
                    arguments: table(arguments)))
        case .exchangeUnbind(let destination, let source, let key, let arguments):
            return pass(
                .exchangeUnbind,
                amqp_exchange_unbind_t(
                    ticket: 0, destination: bytes(destination), source: bytes(source), routing_key: bytes(key), nowait: 0,
                    arguments: table(arguments)))
        case .queueDeclare(let name, let passive, let durable, let exclusive, let autoDelete, let arguments):
            return pass(
                .queueDeclare,
                amqp_queue_declare_t(
                    ticket: 0, queue: bytes(name), passive: passive ? 1 : 0, durable: durable ? 1 : 0,
                    exclusive: exclusive ? 1 : 0, auto_delete: autoDelete ? 1 : 0, nowait: 0, arguments: table(arguments)))
        case .queueBind(let queue, let exchange, let key, let arguments):
            return pass(
                .queueBind,
                amqp_queue_bind_t(
                    ticket: 0, queue: bytes(queue), exchange: bytes(exchange), routing_key: bytes(key), nowait: 0,
                    arguments: table(arguments)))
        case .queueUnbind(let queue, let exchange, let key, let arguments):
            return pass(
                .queueUnbind,
                amqp_queue_unbind_t(
                    ticket: 0, queue: bytes(queue), exchange: bytes(exchange), routing_key: bytes(key), arguments: table(arguments)))
        case .queuePurge(let name):
            return pass(.queuePurge, amqp_queue_purge_t(ticket: 0, queue: bytes(name), nowait: 0))
        case .queueDelete(let name, let ifUnused, let ifEmpty):
            return pass(
                .queueDelete,
                amqp_queue_delete_t(ticket: 0, queue: bytes(name), if_unused: ifUnused ? 1 : 0, if_empty: ifEmpty ? 1 : 0, nowait: 0))
        case .basicQos(let prefetchCount, let global):
            return pass(.basicQos, amqp_basic_qos_t(prefetch_size: 0, prefetch_count: prefetchCount, global: global ? 1 : 0))
        case .basicGet(let queue, let noAck):
            return pass(.basicGet, amqp_basic_get_t(ticket: 0, queue: bytes(queue), no_ack: noAck ? 1 : 0))
        case .confirmSelect:
            return pass(.confirmSelect, amqp_confirm_select_t(nowait: 0))
        }
    }
}

extension InboundMethod {
    /// Copies a decoded method (pool memory) into Swift values. Content-bearing methods are
    /// not decoded here.
    init(cMethod method: amqp_method_t) {
        let decoded = method.decoded
        func field<T>(_ type: T.Type) -> T { decoded!.assumingMemoryBound(to: T.self).pointee }
        func close(_ c: amqp_channel_close_t) -> ServerClose {
            ServerClose(replyCode: c.reply_code, replyText: String(amqpBytes: c.reply_text), classID: c.class_id, methodID: c.method_id)
        }
        guard let id = AMQPMethodID(rawValue: method.id) else {
            self = .unexpected(method.id)
            return
        }
        switch id {
        case .connectionClose:
            let c = field(amqp_connection_close_t.self)
            self = .connectionClose(
                ServerClose(replyCode: c.reply_code, replyText: String(amqpBytes: c.reply_text), classID: c.class_id, methodID: c.method_id))
        case .connectionCloseOk: self = .connectionCloseOk
        case .connectionBlocked: self = .connectionBlocked(reason: String(amqpBytes: field(amqp_connection_blocked_t.self).reason))
        case .connectionUnblocked: self = .connectionUnblocked
        case .connectionUpdateSecretOk: self = .connectionUpdateSecretOk
        case .channelOpenOk: self = .channelOpenOk
        case .channelClose: self = .channelClose(close(field(amqp_channel_close_t.self)))
        case .channelCloseOk: self = .channelCloseOk
        case .exchangeDeclareOk: self = .exchangeDeclareOk
        case .exchangeDeleteOk: self = .exchangeDeleteOk
        case .exchangeBindOk: self = .exchangeBindOk
        case .exchangeUnbindOk: self = .exchangeUnbindOk
        case .queueDeclareOk:
            let ok = field(amqp_queue_declare_ok_t.self)
            self = .queueDeclareOk(
                RabbitMQQueueDeclareResult(name: String(amqpBytes: ok.queue), messageCount: ok.message_count, consumerCount: ok.consumer_count))
        case .queueBindOk: self = .queueBindOk
        case .queueUnbindOk: self = .queueUnbindOk
        case .queuePurgeOk: self = .queuePurgeOk(messageCount: field(amqp_queue_purge_ok_t.self).message_count)
        case .queueDeleteOk: self = .queueDeleteOk(messageCount: field(amqp_queue_delete_ok_t.self).message_count)
        case .basicQosOk: self = .basicQosOk
        case .basicConsumeOk: self = .basicConsumeOk(consumerTag: String(amqpBytes: field(amqp_basic_consume_ok_t.self).consumer_tag))
        case .basicCancelOk: self = .basicCancelOk(consumerTag: String(amqpBytes: field(amqp_basic_cancel_ok_t.self).consumer_tag))
        case .basicCancel: self = .basicCancel(consumerTag: String(amqpBytes: field(amqp_basic_cancel_t.self).consumer_tag))
        case .basicGetEmpty: self = .basicGetEmpty
        case .basicAck:
            let ack = field(amqp_basic_ack_t.self)
            self = .basicAck(deliveryTag: ack.delivery_tag, multiple: ack.multiple != 0)
        case .basicNack:
            let nack = field(amqp_basic_nack_t.self)
            self = .basicNack(deliveryTag: nack.delivery_tag, multiple: nack.multiple != 0)
        case .confirmSelectOk: self = .confirmSelectOk
        default: self = .unexpected(method.id)
        }
    }
}
