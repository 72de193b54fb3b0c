import CSQLite
import Foundation

/// Runs SQL on a store file behind the store's back (to plant a newer schema, read raw
/// values), through the C API directly.
func rawSQL(_ path: String, _ sql: String) -> [String] {
    var db: OpaquePointer?
    guard sqlite3_open(path, &db) == SQLITE_OK else { return [] }
    defer { sqlite3_close(db) }
    var statement: OpaquePointer?
    guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else { return [] }
    defer { sqlite3_finalize(statement) }
    var rows: [String] = []
    while sqlite3_step(statement) == SQLITE_ROW {
        rows.append(sqlite3_column_text(statement, 0).map { String(cString: $0) } ?? "NULL")
    }
    return rows
}


/// Whether the file holds these bytes anywhere (free pages and WAL frames included).
func fileContains(_ path: String, _ secret: String) -> Bool {
    guard let data = FileManager.default.contents(atPath: path) else { return false }
    return data.range(of: Data(secret.utf8)) != nil
}
