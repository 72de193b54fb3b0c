import Foundation

/// A JSON body as a test reads it from outside: by field name, the way a consumer with
/// `jq` would, so that a test fails when a name or a type on the wire changes.
enum JSONValue: Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses a JSON text; `nil` when it is not JSON.
    static func parse(_ text: String) -> JSONValue? {
        guard let data = text.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        else { return nil }
        return from(object)
    }

    private static func from(_ object: Any) -> JSONValue? {
        switch object {
        case is NSNull: return .null
        case let number as NSNumber:
            switch String(cString: number.objCType) {
            case "c", "B": return .bool(number.boolValue)
            case "f", "d": return .double(number.doubleValue)
            default: return .int(number.int64Value)
            }
        case let string as String: return .string(string)
        case let array as [Any]: return .array(array.compactMap(from))
        case let dictionary as [String: Any]: return .object(dictionary.compactMapValues(from))
        default: return nil
        }
    }

    // MARK: - Reading

    subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    var int: Int64? {
        switch self {
        case .int(let value): value
        case .double(let value): Int64(exactly: value)
        default: nil
        }
    }

    var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    var array: [JSONValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    var isNull: Bool { self == .null }
}
