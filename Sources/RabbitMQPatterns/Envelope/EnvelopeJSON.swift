import Foundation

/// The JSON settings envelopes are written and read with, and the mapping from Foundation's
/// coding errors to ``RabbitMQPatternsError``.
enum EnvelopeJSON {
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        // Foundation escapes "/" by default; other languages' JSON never does.
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(EnvelopeTimestamp.format(date))
        }
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = EnvelopeTimestamp.parse(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "'\(text)' is not an ISO-8601 date-time")
            }
            return date
        }
        return decoder
    }

    /// `data.items[2].sku` for a coding path.
    static func path(_ codingPath: [any CodingKey]) -> String? {
        var text = ""
        for key in codingPath {
            if let index = key.intValue, key.stringValue.hasPrefix("Index ") || key.stringValue == "\(index)" {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text.isEmpty ? nil : text
    }

    /// The error for a failure to encode or decode; `field` prefixes the coding path when the
    /// value was coded on its own (an envelope's `data`).
    static func patternsError(_ error: any Error, under field: String? = nil) -> RabbitMQPatternsError {
        let prefix: [any CodingKey] = field.map { [DynamicCodingKey($0)] } ?? []
        func path(_ codingPath: [any CodingKey]) -> String? { Self.path(prefix + codingPath) }
        switch error {
        case let error as RabbitMQPatternsError:
            return error
        case DecodingError.keyNotFound(let key, let context):
            let field = path(context.codingPath + [key])
            return .invalidEnvelope("missing field '\(field ?? key.stringValue)'", field: field)
        case DecodingError.valueNotFound(let type, let context):
            let field = path(context.codingPath)
            return .invalidEnvelope("field '\(field ?? "?")' is null, expected \(describe(type))", field: field)
        case DecodingError.typeMismatch(let type, let context):
            let field = path(context.codingPath)
            guard let field else { return .invalidEnvelope("expected a JSON object", field: nil) }
            return .invalidEnvelope("field '\(field)' has the wrong type, expected \(describe(type))", field: field)
        case DecodingError.dataCorrupted(let context):
            guard let field = path(context.codingPath) else {
                return .invalidEnvelope("not valid JSON", field: nil)
            }
            return .invalidEnvelope("field '\(field)': \(context.debugDescription)", field: field)
        case EncodingError.invalidValue(_, let context):
            let field = path(context.codingPath)
            return .invalidEnvelope("cannot encode field '\(field ?? "?")': \(context.debugDescription)", field: field)
        default:
            return .invalidEnvelope("\(error)", field: nil)
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is any BinaryInteger.Type: "an integer"
        case is any BinaryFloatingPoint.Type: "a number"
        case is [String: Any].Type, is [String: any Sendable].Type: "an object"
        default: "\(type)"
        }
    }
}
