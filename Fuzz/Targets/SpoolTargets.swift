import NIOCore
import RecotapKeyd

extension FuzzTarget {
    /// A spool file's bytes, as a writer chooses them: the content rules of README "Dropping in a new key".
    static let spoolContent = FuzzTarget(
        name: "spool-content", summary: "KeyFileContent: a spool file's bytes"
    ) { bytes throws(FuzzFailure) in
        switch KeyFileContent.parse(bytes) {
        case .key(let key):
            let length = key.utf8.count
            try check(
                (KeyFileContent.minimumLength...KeyFileContent.maximumLength).contains(length),
                "accepted a key of \(length) bytes")
            try check(key.utf8.allSatisfy { (0x21...0x7E).contains($0) }, "accepted a byte outside printable ASCII")
            try check(KeyFileContent.parse(Array(key.utf8)) == .key(key), "a parsed key does not parse to itself")
        case .empty:
            try check(
                bytes.allSatisfy { [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0xEF, 0xBB, 0xBF].contains($0) },
                "called a file with content empty")
        case .malformed(let reason):
            try check(!reason.isEmpty && reason.utf8.count < 200, "a refusal without a short reason")
            try check(!reason.unicodeScalars.contains(where: TerminalSafe.isControl), "a reason with a control character")
        }
    }

    /// Spool file names, as the kernel delivers them: a buffer of `inotify_event`s
    /// (the name bytes are the writer's), each name judged and escaped for the log.
    static let spoolNames = FuzzTarget(
        name: "spool-names", summary: "inotify events and spool file names"
    ) { bytes throws(FuzzFailure) in
        var buffer = ByteBuffer(bytes: bytes)
        buffer.moveReaderIndex(to: 0)
        let events = InotifyWatch.parse(buffer)
        try check(events.count <= bytes.count / 16, "\(events.count) events from \(bytes.count) bytes")
        // The bytes as one name, too (a name inotify delivered is at most 255 bytes).
        let names = events.map(\.name) + [String(decoding: bytes.prefix(255), as: UTF8.self)]
        for name in names {
            let candidate = SpoolDirectory.isCandidate(name)
            if candidate {
                try check(!name.hasPrefix(".") && !name.hasSuffix(".tmp") && !name.hasSuffix("~"), "\(name) taken as a candidate")
            }
            let shown = TerminalSafe.escape(name)
            try check(!shown.unicodeScalars.contains(where: TerminalSafe.isControl), "an escaped name still holds a control character")
            try check(
                shown == name || name.unicodeScalars.contains(where: TerminalSafe.needsEscape),
                "escaping changed a name that needed none")
        }
    }
}
