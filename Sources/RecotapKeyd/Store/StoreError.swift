import CSQLite

/// A store failure. At start these are fatal and the message says what to do; later
/// they are logged and the operation that needed the store fails.
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        case cannotOpen, notADatabase, corrupt, newerSchema, unsafeLocation, closed, sqlite, notFound, invalidTransition, sealed
    }

    public let code: Code
    public let path: String
    public let message: String

    init(_ code: Code, path: String, message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    static func sqlite(_ rc: Int32, path: String, message: String) -> StoreError {
        switch rc & 0xff {
        case SQLITE_NOTADB: StoreError(.notADatabase, path: path, message: "not a SQLite database (\(message))")
        case SQLITE_CORRUPT: StoreError(.corrupt, path: path, message: "database is corrupt (\(message))")
        default: StoreError(.sqlite, path: path, message: "\(message) (SQLite code \(rc))")
        }
    }

    public var description: String { "store \(path): \(message)" }
}
