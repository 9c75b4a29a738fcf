import Glibc
import Logging

extension EventLoop {
    /// Settings chosen when a loop starts.
    ///
    /// The defaults come from the sweeps in `docs/benchmarks.md`. Each can be overridden with an
    /// environment variable (read when the value is created), so benchmarks and deployments can tune
    /// a program without rebuilding it. An empty variable counts as unset; a value that does not
    /// parse is ignored with a warning in the log.
    public struct Configuration: Sendable {
        /// Submission queue entries (`URINGSTREAMS_RING_ENTRIES`); the completion queue gets 8 times
        /// as many. Brought into 1...32768.
        public var ringEntries: UInt32 = 256
        /// Receive buffers of the loop, a power of two (`URINGSTREAMS_RECEIVE_BUFFER_COUNT`). The
        /// provided-buffer ring holds about 1 MiB of them at a time, the ones freed last first, so
        /// the kernel copies into memory still in the CPU's caches; it holds more after running dry.
        public var receiveBufferCount = 64
        /// Size of each receive buffer (`URINGSTREAMS_RECEIVE_BUFFER_SIZE`). The 16 MiB this makes
        /// per loop is address space: pages become resident as the kernel first writes them.
        public var receiveBufferSize = 256 * 1024
        /// Let the kernel fill each receive buffer piece by piece, so one large buffer serves many
        /// small receives (`IOU_PBUF_RING_INC`, Linux 6.12; `URINGSTREAMS_INCREMENTAL_BUFFERS=0`
        /// turns it off). Older kernels fall back to one buffer per receive.
        public var incrementalReceiveBuffers = true
        /// Let one receive completion cover several buffers (`IORING_RECVSEND_BUNDLE`, Linux 6.10;
        /// `URINGSTREAMS_RECEIVE_BUNDLES=1` turns it on). Off by default: with large incremental
        /// buffers a receive rarely spans two, and streaming measured slower with bundles (one
        /// completion's data then arrives as several chunks, each read and written on its own).
        public var receiveBundles = false
        /// Free receive buffers left unused this long give their pages back to the system
        /// (`madvise(MADV_DONTNEED)`), all but about 1 MiB kept for the next burst, and a ring grown
        /// by a burst shrinks back; nil keeps them resident (`URINGSTREAMS_RECEIVE_BUFFER_RELEASE_MS`,
        /// 0 for never). A buffer is released one to two intervals after its last use, and its
        /// next use faults in fresh pages. Buffers in the ring keep their pages until used.
        public var receiveBufferRelease: Duration? = .seconds(2)
        /// Sends of at least this many bytes to a peer that is not on this host use
        /// `IORING_OP_SENDMSG_ZC`; nil turns zero-copy sends off
        /// (`URINGSTREAMS_ZERO_COPY_SEND_THRESHOLD`, 0 for off).
        public var zeroCopySendThreshold: Int? = 16 * 1024
        /// How many bytes one multishot receive takes before it is armed again
        /// (`URINGSTREAMS_MULTISHOT_RECEIVE_LIMIT`; 0 for no limit). It bounds what still arrives
        /// after a reader pauses (asyncio stops at one 256 KiB `recv`); kernels before 6.17 lack
        /// the limit and receive on until the cancel lands, up to the socket's receive buffer.
        public var multishotReceiveLimit = 256 * 1024
        /// Also use zero-copy sends on loopback and Unix sockets, where the kernel copies anyway
        /// (`URINGSTREAMS_ZERO_COPY_LOCAL=1`; for measuring and testing).
        public var zeroCopyLocalSends = false

        /// Which backend loops use (`URINGSTREAMS_BACKEND`: `automatic`, `io_uring` or `epoll`):
        /// by default io_uring where it works, epoll where it is blocked.
        public var backend = Backend.automatic

        /// Environment values that were set but not used (not a number, or out of range), with
        /// why; logged once when a group or ``EventLoop/run(logger:_:)`` starts with them.
        var rejectedEnvironment: [String] = []

        /// The defaults, with any environment overrides applied.
        public init() {
            self.init(environment: { name in getenv(name).map { String(cString: $0) } })
        }

        /// The defaults with the overrides `environment` gives (a variable's value by name), so
        /// tests need not change the process's environment under other threads. An empty value
        /// counts as unset: `NAME= command` is how a shell clears a variable for one command.
        init(environment variable: (String) -> String?) {
            func environment(_ name: String) -> String? { variable(name).flatMap { $0.isEmpty ? nil : $0 } }
            let countIsValid = { (count: Int) in count > 0 && count <= 32768 && count & (count - 1) == 0 }
            if let count = read(
                environment, "URINGSTREAMS_RECEIVE_BUFFER_COUNT", "a power of two in 1...32768", countIsValid)
            {
                receiveBufferCount = count
            }
            let sizeIsValid = { (size: Int) in size >= 512 && size <= 1 << 24 }
            if let size = read(environment, "URINGSTREAMS_RECEIVE_BUFFER_SIZE", "512...16777216", sizeIsValid) {
                receiveBufferSize = size
            }
            if let flag = read(environment, "URINGSTREAMS_INCREMENTAL_BUFFERS") {
                incrementalReceiveBuffers = flag != 0
            }
            if let flag = read(environment, "URINGSTREAMS_RECEIVE_BUNDLES") { receiveBundles = flag != 0 }
            if let milliseconds = read(
                environment, "URINGSTREAMS_RECEIVE_BUFFER_RELEASE_MS", "0 or more", { $0 >= 0 })
            {
                receiveBufferRelease = milliseconds > 0 ? .milliseconds(milliseconds) : nil
            }
            if let threshold = read(environment, "URINGSTREAMS_ZERO_COPY_SEND_THRESHOLD") {
                zeroCopySendThreshold = threshold > 0 ? threshold : nil
            }
            if let flag = read(environment, "URINGSTREAMS_ZERO_COPY_LOCAL") { zeroCopyLocalSends = flag != 0 }
            if let entries = read(environment, "URINGSTREAMS_RING_ENTRIES", "1...32768", { $0 > 0 && $0 <= 32768 }) {
                ringEntries = UInt32(entries)
            }
            if let text = environment("URINGSTREAMS_BACKEND") {
                if let choice = Backend(rawValue: text.lowercased()) {
                    backend = choice
                } else {
                    let names = Backend.allCases.map(\.rawValue).joined(separator: ", ")
                    rejectedEnvironment.append("URINGSTREAMS_BACKEND=\(text) ignored: expected one of \(names)")
                }
            }
            if let limit = read(environment, "URINGSTREAMS_MULTISHOT_RECEIVE_LIMIT", "0 or more", { $0 >= 0 }) {
                multishotReceiveLimit = limit
            }
        }

        /// These settings with out-of-range values brought into range, so a bad value never
        /// traps on a loop thread: the buffer count becomes a power of two in 1...32768, the size
        /// lies in 512 bytes...16 MiB, and a threshold of 0 or less turns zero-copy sends off.
        var validated: Configuration {
            var result = self
            let count = min(max(receiveBufferCount, 1), 32768)
            result.receiveBufferCount = 1 << (Int.bitWidth - 1 - count.leadingZeroBitCount)
            result.receiveBufferSize = min(max(receiveBufferSize, 512), 1 << 24)
            if let threshold = zeroCopySendThreshold, threshold <= 0 { result.zeroCopySendThreshold = nil }
            if let release = receiveBufferRelease, release <= .zero { result.receiveBufferRelease = nil }
            result.ringEntries = min(max(ringEntries, 1), 32768)
            result.multishotReceiveLimit = min(max(multishotReceiveLimit, 0), Int(Int32.max))
            return result
        }

        /// The integer in the environment variable `name`, when set and `isValid`; a value that is
        /// set but not a number or not valid is recorded in ``rejectedEnvironment`` and ignored.
        private mutating func read(
            _ environment: (String) -> String?, _ name: String, _ expected: String = "an integer",
            _ isValid: (Int) -> Bool = { _ in true }
        ) -> Int? {
            guard let text = environment(name) else { return nil }
            guard let value = Int(text), isValid(value) else {
                rejectedEnvironment.append("\(name)=\(text) ignored: expected \(expected)")
                return nil
            }
            return value
        }

        /// Logs each rejected environment value once, at warning: the program runs on with the
        /// default, so the log is the only place a typo shows.
        func logRejectedEnvironment(to logger: Logger) {
            for rejection in rejectedEnvironment {
                logger.warning("configuration rejected; using the default", metadata: ["setting": "\(rejection)"])
            }
        }
    }
}
