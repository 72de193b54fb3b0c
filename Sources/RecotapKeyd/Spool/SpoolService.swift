import Foundation
import Logging
import NIOCore
import ServiceLifecycle

/// Watches the spool directory: once the daemon is ready, it judges the files left
/// there while it was down, then every file closed after writing or renamed into the
/// directory, and everything again if the kernel's event queue overflowed.
public struct SpoolService: Service, CustomStringConvertible {
    let intake: SpoolIntake
    /// The inotify watch, opened (and so checked) before `READY=1`.
    let inotify: NIOAsyncChannel<ByteBuffer, Never>
    /// When the watch was set up: files modified after it bring their own events.
    let watchingSince: Date
    let readiness: Readiness
    let logger: Logger

    public var description: String { "SpoolService" }

    /// A new regular file with one link is still being written: its close (or a
    /// rename) will say when it is complete. Anything else that appears — a symlink, a
    /// FIFO, a device, a hard link to an existing file — is complete as it is.
    private func isBeingWritten(_ name: String) -> Bool {
        var info = stat()
        return lstat(intake.directoryPath + "/" + name, &info) == 0 && info.st_mode & S_IFMT == S_IFREG
            && info.st_nlink == 1
    }

    public func run() async throws {
        try await runUntilGracefulShutdown(after: readiness) {
            try await inotify.executeThenClose { inbound, _ in
                // Files left while the daemon was down. 50 ms of slack: a file
                // closed just before the watch began has no event of its own.
                await intake.processAll(modifiedBefore: watchingSince.addingTimeInterval(0.05))
                for try await buffer in inbound {
                    let events = InotifyWatch.parse(buffer)
                    if events.contains(where: \.isWatchGone) {
                        logger.critical("the spool directory was removed or moved; stopping so that systemd restarts the daemon")
                        throw SpoolSetupError(message: "the spool directory went away")
                    }
                    if events.contains(where: { $0.isOverflow }) {
                        logger.warning("inotify queue overflowed: rescanning the spool directory")
                        await intake.processAll()
                        continue
                    }
                    let names = Set(events.filter { event in
                        SpoolDirectory.isCandidate(event.name)
                            && (event.isFinished || (event.isCreated && !isBeingWritten(event.name)))
                    }.map(\.name))
                    if !names.isEmpty {
                        await intake.process(names: names)
                    }
                }
            }
        }
    }
}
