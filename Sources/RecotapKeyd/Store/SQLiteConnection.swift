import CSQLite
import Foundation

/// A thin, non-thread-safe wrapper over one SQLite connection. Its only owner is
/// ``KeyStore``, an actor, which serialises every use.
final class SQLiteConnection {
    /// How long a statement waits for another connection's lock before SQLITE_BUSY.
    static let busyTimeoutMilliseconds: Int32 = 5000
    private var handle: OpaquePointer?
    let path: String

    init(path: String) throws(StoreError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw StoreError(.cannotOpen, path: path, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, Self.busyTimeoutMilliseconds)
    }

    deinit { close() }

    func close() {
        if let handle {
            sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    private var db: OpaquePointer {
        get throws(StoreError) {
            guard let handle else { throw StoreError(.closed, path: path, message: "the store is closed") }
            return handle
        }
    }

    var lastErrorMessage: String {
        guard let handle else { return "closed" }
        return String(cString: sqlite3_errmsg(handle))
    }

    func execute(_ sql: String) throws(StoreError) {
        let db = try self.db
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? lastErrorMessage
            sqlite3_free(message)
            throw StoreError.sqlite(rc, path: path, message: text)
        }
    }

    /// Runs a statement and returns every row.
    @discardableResult
    func query(_ sql: String, _ bindings: [SQLiteValue] = []) throws(StoreError) -> [SQLiteRow] {
        let db = try self.db
        var statement: OpaquePointer?
        var rc = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else {
            throw StoreError.sqlite(rc, path: path, message: lastErrorMessage)
        }
        defer { sqlite3_finalize(statement) }
        for (offset, value) in bindings.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .integer(let number): rc = sqlite3_bind_int64(statement, index, number)
            case .real(let number): rc = sqlite3_bind_double(statement, index, number)
            case .text(let text): rc = sqlite3_bind_text(statement, index, text, -1, SQLiteConnection.transient)
            }
            guard rc == SQLITE_OK else { throw StoreError.sqlite(rc, path: path, message: lastErrorMessage) }
        }
        var rows: [SQLiteRow] = []
        while true {
            rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw StoreError.sqlite(rc, path: path, message: lastErrorMessage) }
            var row = SQLiteRow()
            for column in 0..<sqlite3_column_count(statement) {
                let name = String(cString: sqlite3_column_name(statement, column))
                switch sqlite3_column_type(statement, column) {
                case SQLITE_INTEGER: row.values[name] = .integer(sqlite3_column_int64(statement, column))
                case SQLITE_FLOAT: row.values[name] = .real(sqlite3_column_double(statement, column))
                case SQLITE_TEXT: row.values[name] = .text(String(cString: sqlite3_column_text(statement, column)))
                default: row.values[name] = .null
                }
            }
            rows.append(row)
        }
        return rows
    }

    var changes: Int { handle.map { Int(sqlite3_changes($0)) } ?? 0 }
    var lastInsertRowID: Int64 { handle.map { sqlite3_last_insert_rowid($0) } ?? 0 }

    /// `SQLITE_TRANSIENT` is a macro and not imported: SQLite copies the bound text.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}

enum SQLiteValue {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)

    init(_ date: Date?) {
        self = date.map { .real($0.timeIntervalSince1970) } ?? .null
    }

    init(_ text: String?) {
        self = text.map { .text($0) } ?? .null
    }
}

struct SQLiteRow {
    var values: [String: SQLiteValue] = [:]

    func int(_ name: String) -> Int64? {
        switch values[name] {
        case .integer(let number): number
        case .real(let number): Saturating.int64(number)
        default: nil
        }
    }

    func double(_ name: String) -> Double? {
        switch values[name] {
        case .integer(let number): Double(number)
        case .real(let number): number
        default: nil
        }
    }

    func text(_ name: String) -> String? {
        if case .text(let text) = values[name] { return text }
        return nil
    }

    func date(_ name: String) -> Date? {
        double(name).map { Date(timeIntervalSince1970: $0) }
    }
}
