import Foundation
import NIOCore
import NIOPosix

/// One inotify event, as far as the spool cares.
public struct InotifyEvent: Sendable, Equatable {
    public var mask: UInt32
    public var name: String

    public var isOverflow: Bool { mask & InotifyWatch.queueOverflow != 0 }
    /// A file finished: closed after writing, or renamed into the directory.
    public var isFinished: Bool { mask & (InotifyWatch.closeWrite | InotifyWatch.movedTo) != 0 }
    /// Something was created. A new regular file is then still being written and
    /// waits for its close; a symlink, FIFO, device, directory or hard link never gets
    /// a close, so it is judged on creation.
    public var isCreated: Bool { mask & InotifyWatch.create != 0 }
    /// The watched directory itself went away or was moved.
    public var isWatchGone: Bool { mask & (InotifyWatch.ignored | InotifyWatch.deleteSelf | InotifyWatch.moveSelf) != 0 }
}

/// inotify on the spool directory, read through SwiftNIO: the non-blocking inotify
/// descriptor is handed to a `NIOPipeBootstrap` and read as an async sequence of
/// buffers, so waiting for files costs no thread and no polling.
public enum InotifyWatch {
    static let closeWrite: UInt32 = 0x0000_0008  // IN_CLOSE_WRITE
    static let movedTo: UInt32 = 0x0000_0080  // IN_MOVED_TO
    static let create: UInt32 = 0x0000_0100  // IN_CREATE
    static let deleteSelf: UInt32 = 0x0000_0400  // IN_DELETE_SELF
    static let moveSelf: UInt32 = 0x0000_0800  // IN_MOVE_SELF
    static let queueOverflow: UInt32 = 0x0000_4000  // IN_Q_OVERFLOW
    static let ignored: UInt32 = 0x0000_8000  // IN_IGNORED
    static let onlyDirectory: UInt32 = 0x0100_0000  // IN_ONLYDIR
    static let dontFollow: UInt32 = 0x0200_0000  // IN_DONT_FOLLOW

    /// An inotify descriptor watching `directory` for files closed after writing and
    /// files renamed into it. Synchronous, so that a failure stops the start before
    /// `READY=1`.
    public static func descriptor(directory: String) throws(SpoolSetupError) -> CInt {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else {
            throw SpoolSetupError(message: "inotify_init1: \(String(cString: strerror(errno)))")
        }
        let mask = closeWrite | movedTo | create | deleteSelf | moveSelf | onlyDirectory | dontFollow
        guard inotify_add_watch(fd, directory, mask) >= 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw SpoolSetupError(message: "cannot watch \(directory) with inotify: \(reason)")
        }
        return fd
    }

    /// Hands the descriptor to SwiftNIO, which from then on owns (and closes) it.
    public static func channel(descriptor fd: CInt) async throws -> NIOAsyncChannel<ByteBuffer, Never> {
        try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // inotify refuses a read into a buffer smaller than the next event (EINVAL):
            // always offer 64 KiB.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .takingOwnershipOfDescriptor(input: fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// `struct inotify_event`: wd, mask, cookie, len (4 bytes each), then `len` bytes of
    /// NUL-padded name. Swift does not import the flexible array member.
    public static func parse(_ buffer: ByteBuffer) -> [InotifyEvent] {
        var buffer = buffer
        var events: [InotifyEvent] = []
        while buffer.readableBytes >= 16 {
            guard let _ = buffer.readInteger(endianness: .host, as: Int32.self),
                let mask = buffer.readInteger(endianness: .host, as: UInt32.self),
                let _ = buffer.readInteger(endianness: .host, as: UInt32.self),
                let length = buffer.readInteger(endianness: .host, as: UInt32.self),
                let nameBytes = buffer.readBytes(length: Int(length))
            else { break }
            let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
            events.append(InotifyEvent(mask: mask, name: name))
        }
        return events
    }
}
