extension RabbitMQConfiguration {
    /// Parses an `amqp://` or `amqps://` URI (the RabbitMQ URI specification).
    ///
    /// `amqp://user:password@host:port/vhost?heartbeat=10&connection_timeout=5000`
    ///
    /// User, password and virtual host are percent-decoded (`%2f` is `/`); a missing or empty
    /// path means the default virtual host `/`. Supported query keys: `heartbeat` (seconds),
    /// `connection_timeout` (milliseconds), `frame_max`, `channel_max`, `connection_name`,
    /// `auth_mechanism` (`plain` or `external`: the client certificate; repeated, the first
    /// one this client supports wins), and for TLS `cacertfile`, `certfile`, `keyfile`,
    /// `verify` (`verify_peer` or `verify_none`) and `server_name_indication` (the name the
    /// broker's certificate must carry, when not the host). Any other key is an error, so a
    /// typo is not silently ignored.
    ///
    /// Generated passwords often hold `/`, `?`, `#`, `@`, `:` or `,`, and a strict RFC 3986
    /// reading would cut such a password at its first `/` and take the rest for a host, a
    /// port or a path. This parser splits the text after `scheme://` so that a raw password
    /// works:
    ///
    /// 1. The user information runs to the **last** `@` of the URI (none: no user
    ///    information). The user name ends at its first `:`; the password is everything
    ///    after that colon, raw `/ ? # @ : ,` included.
    /// 2. The authority (`host`, `host:port`, `[ipv6]:port`) runs from there to the first
    ///    `/`, `?` or `#`; the virtual host from that `/` to the first `?`; then the query.
    ///    A `#` after the user information is refused (fragments mean nothing here).
    ///
    /// So `%` is the one character a password must escape (`%25`: an escape is always
    /// decoded), a `:` in a user name is `%3A`, and an `@` in the virtual host or in a query
    /// value must be written `%40` (an unescaped one would end the user information).
    /// Percent-encoding any reserved character always works, as in every other client.
    ///
    /// - Throws: ``RabbitMQError`` with code `invalidURI`, naming the problem and showing the
    ///   URI as ``redactedURI(_:)`` masks it: never any part of the password.
    public init(uri: String) throws(RabbitMQError) {
        self.init()
        do {
            try apply(ParsedURI(parsing: uri))
        } catch {
            throw error.naming(uri: uri)
        }
    }

    /// Parses several URIs (cluster nodes); user, password, virtual host and options come
    /// from the first, the endpoints from all of them in order.
    public init(uris: [String]) throws(RabbitMQError) {
        guard let first = uris.first else { throw .invalidURI("no URI given") }
        try self.init(uri: first)
        var endpoints: [Endpoint] = []
        for uri in uris {
            do {
                endpoints.append(try ParsedURI(parsing: uri).endpoint)
            } catch {
                throw error.naming(uri: uri)
            }
        }
        self.endpoints = endpoints
    }

    /// `uri` with its password replaced by `***`, for messages and logs:
    /// `amqp://app:s3cr/et@host/` becomes `amqp://app:***@host/`.
    ///
    /// It splits the URI by the rule of ``init(uri:)`` (user information up to the last
    /// `@`), so what the parser would take for the password is what it hides, whatever the
    /// password holds. A URI without `@` whose port is not a number has that "port" masked
    /// too, with everything after it: it is most likely a password whose `@` was lost
    /// (`amqp://app:pa` from a list cut at the comma in `pa,ss`). Text that is not a URI at
    /// all is masked by the same rule.
    public static func redactedURI(_ uri: String) -> String {
        let start = uri.firstRange(of: "://")?.upperBound ?? uri.startIndex
        let rest = uri[start...]
        if let at = rest.lastIndex(of: "@") {
            guard let colon = rest[..<at].firstIndex(of: ":") else { return uri }
            return String(uri[...colon]) + "***" + String(uri[at...])
        }
        let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<end]
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            authority = authority[authority.index(after: close)...]
        }
        guard let colon = authority.lastIndex(of: ":") else { return uri }
        let port = authority[authority.index(after: colon)...]
        if port.allSatisfy({ $0.isASCII && $0.isNumber }) { return uri }
        // What follows such a "port" may be the rest of the password: all of it goes.
        return String(uri[...colon]) + "***"
    }

    /// Splits a comma-separated list of URIs (`RABBITMQ_URL` in `rmq` and the tests) into
    /// its URIs, trimmed, empty ones dropped.
    ///
    /// It splits only at a comma followed (after optional spaces) by `amqp://` or `amqps://`
    /// (or by nothing: a trailing comma), so a comma inside a password
    /// (`amqp://app:pa,ss@host/`) stays in it. A password that itself holds `,amqp://` is not
    /// told apart from a list: write its comma as `%2C`, which always works.
    public static func splitURIList(_ text: String) -> [String] {
        var items: [Substring] = []
        var current = text.startIndex
        var index = text.startIndex
        while let comma = text[index...].firstIndex(of: ",") {
            let next = text[text.index(after: comma)...].drop(while: { $0 == " " || $0 == "\t" })
            let lowered = next.prefix(8).lowercased()
            if next.isEmpty || lowered.hasPrefix("amqp://") || lowered.hasPrefix("amqps://") {
                items.append(text[current..<comma])
                current = text.index(after: comma)
            }
            index = text.index(after: comma)
        }
        items.append(text[current...])
        return items.compactMap { item in
            let trimmed = item.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()
            return trimmed.isEmpty ? nil : String(trimmed)
        }
    }

    private mutating func apply(_ parsed: ParsedURI) throws(RabbitMQError) {
        endpoints = [parsed.endpoint]
        username = parsed.username ?? "guest"
        password = parsed.password ?? "guest"
        virtualHost = parsed.virtualHost
        var mechanisms: [String] = []
        for (key, value) in parsed.query {
            switch key {
            case "auth_mechanism":
                mechanisms.append(value.lowercased())
            case "server_name_indication":
                guard !value.isEmpty else { throw .invalidURI("query parameter server_name_indication is empty") }
                tls.serverName = value
            case "heartbeat":
                heartbeat = .seconds(try Self.integer(value, key: key, range: 0...65535))
            case "connection_timeout":
                connectTimeout = .milliseconds(try Self.integer(value, key: key, range: 1...Int(Int32.max)))
            case "frame_max":
                frameMax = try Self.integer(value, key: key, range: RabbitMQConfiguration.minimumFrameMax...Int(Int32.max))
            case "channel_max":
                channelMax = try Self.integer(value, key: key, range: 1...65535)
            case "connection_name":
                connectionName = value
            case "cacertfile":
                tls.caCertificatePath = value
            case "certfile":
                tls.certificatePath = value
            case "keyfile":
                tls.keyPath = value
            case "verify":
                switch value {
                case "verify_peer": tls.verifyPeer = true
                case "verify_none":
                    tls.verifyPeer = false
                    tls.verifyHostname = false
                default: throw .invalidURI("query parameter verify must be verify_peer or verify_none")
                }
            default:
                throw .invalidURI("unsupported query parameter '\(key)'")
            }
        }
        if !mechanisms.isEmpty {
            // The RabbitMQ URI spec lets the parameter repeat, in order of preference.
            guard let supported = mechanisms.first(where: { $0 == "plain" || $0 == "external" }) else {
                throw .invalidURI(
                    "auth_mechanism \(mechanisms.joined(separator: ", ")) is not supported (plain or external)")
            }
            authenticationMechanism = supported == "external" ? .external : .plain
        }
    }

    private static func integer(_ text: String, key: String, range: ClosedRange<Int>) throws(RabbitMQError) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw .invalidURI("query parameter \(key)=\(text) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }
}

/// The pieces of an AMQP URI.
struct ParsedURI {
    var endpoint: RabbitMQConfiguration.Endpoint
    var username: String?
    var password: String?
    var virtualHost: String
    var query: [(String, String)]

    /// Splits `uri` by the rule ``RabbitMQConfiguration/init(uri:)`` documents. Its errors
    /// name the problem only; the callers add the redacted URI. No message here may quote
    /// text before the last `@`: that is where the password is.
    init(parsing uri: String) throws(RabbitMQError) {
        let useTLS: Bool
        var rest: Substring
        if uri.hasPrefix("amqp://") {
            useTLS = false
            rest = uri.dropFirst("amqp://".count)
        } else if uri.hasPrefix("amqps://") {
            useTLS = true
            rest = uri.dropFirst("amqps://".count)
        } else {
            // The text before the first colon is a scheme or at most a user name, never a
            // password.
            let scheme = uri.firstIndex(of: ":").map { String(uri[..<$0]) }
            throw .invalidURI(
                scheme.map { "unsupported scheme '\($0)' (expected amqp or amqps)" }
                    ?? "missing scheme (expected amqp:// or amqps://)")
        }

        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                username = try Self.decode(userInfo[..<colon], part: "user")
                password = try Self.decode(userInfo[userInfo.index(after: colon)...], part: "password")
            } else {
                username = try Self.decode(userInfo, part: "user")
            }
        }
        var queryText: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            queryText = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        if rest.contains("#") || queryText.contains("#") { throw .invalidURI("fragments are not allowed") }
        var path: Substring? = nil
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        let authority = rest

        let host: Substring
        var portText: Substring? = nil
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .invalidURI("unterminated IPv6 address")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidURI("unexpected text after IPv6 address") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        let hostName = try Self.decode(host, part: "host")
        var port: Int? = nil
        if let portText {
            guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), !portText.isEmpty else {
                // Not quoted: without an '@' a "port" may be a password cut from its '@'.
                throw .invalidURI("the port is not a number")
            }
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw .invalidURI("port '\(portText)' is not in 1...65535")
            }
            port = value
        }
        endpoint = .init(host: hostName.isEmpty ? "127.0.0.1" : hostName, port: port, useTLS: useTLS)

        if let path, !path.isEmpty {
            guard !path.contains("/") else {
                throw .invalidURI("the virtual host must be one path segment (write '/' as %2F)")
            }
            virtualHost = try Self.decode(path, part: "virtual host")
        } else {
            virtualHost = "/"
        }

        query = []
        for pair in queryText.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = try Self.decode(parts[0], part: "query")
            let value = parts.count > 1 ? try Self.decode(parts[1], part: "query") : ""
            query.append((key, value))
        }
    }

    private static func decode(_ text: Substring, part: String) throws(RabbitMQError) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw .invalidURI("bad percent-encoding in the \(part)")
            }
            bytes.append(high << 4 | low)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw .invalidURI("the \(part) is not valid UTF-8 after percent-decoding")
        }
        return decoded
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension RabbitMQError {
    /// This `invalidURI` error with the URI it is about, password masked.
    func naming(uri: String) -> RabbitMQError {
        var error = self
        error.message += " in \(RabbitMQConfiguration.redactedURI(uri))"
        return error
    }
}
