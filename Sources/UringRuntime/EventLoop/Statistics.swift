extension EventLoop {
    /// What a loop has done since it started; cheap to read from any thread.
    ///
    /// Published by the loop at the end of each turn, so a value can trail the loop by one turn.
    public struct Statistics: Sendable, Equatable {
        /// Bytes the kernel delivered into receive buffers.
        public var bytesReceived = 0
        /// Bytes the runtime copied between a receive buffer and what a read returned.
        public var bytesCopiedOnReceive = 0
        /// Bytes the kernel confirmed sent.
        public var bytesSent = 0
        /// Bytes the runtime copied to send them (from caller collections into send storage).
        public var bytesCopiedOnSend = 0
        /// Submission queue entries handed to the kernel.
        public var submissions = 0
        /// `io_uring_enter` system calls.
        public var enterCalls = 0
        /// Completion queue entries reaped.
        public var completions = 0
        /// Receives that ended because the buffer ring was empty (ENOBUFS).
        public var bufferExhaustions = 0
        /// Multishot receives submitted again after they ended.
        public var receiveRearms = 0
        /// Sends made with `IORING_OP_SEND_ZC`.
        public var zeroCopySends = 0
        /// Zero-copy sends that fell back to a copying send.
        public var zeroCopyFallbacks = 0
        /// Connections servers accepted onto this loop.
        public var connectionsAccepted = 0
        /// Of those, the ones whose socket has closed (open = accepted - closed).
        public var connectionsClosed = 0
        /// Accepts on this loop's listeners that failed (`EMFILE`, `ECONNABORTED`...).
        public var acceptErrors = 0
        /// Server-side TLS handshakes on this loop that failed or timed out.
        public var tlsHandshakeFailures = 0
        /// The backend the loop does I/O with (``EventLoop/Backend/ioUring`` or
        /// ``EventLoop/Backend/epoll``); nil while it has none, and in a sum over loops whose
        /// backends differ.
        public var backend: Backend?

        public init() {}

        static func + (a: Statistics, b: Statistics) -> Statistics {
            var s = Statistics()
            s.bytesReceived = a.bytesReceived + b.bytesReceived
            s.bytesCopiedOnReceive = a.bytesCopiedOnReceive + b.bytesCopiedOnReceive
            s.bytesSent = a.bytesSent + b.bytesSent
            s.bytesCopiedOnSend = a.bytesCopiedOnSend + b.bytesCopiedOnSend
            s.submissions = a.submissions + b.submissions
            s.enterCalls = a.enterCalls + b.enterCalls
            s.completions = a.completions + b.completions
            s.bufferExhaustions = a.bufferExhaustions + b.bufferExhaustions
            s.receiveRearms = a.receiveRearms + b.receiveRearms
            s.zeroCopySends = a.zeroCopySends + b.zeroCopySends
            s.zeroCopyFallbacks = a.zeroCopyFallbacks + b.zeroCopyFallbacks
            s.connectionsAccepted = a.connectionsAccepted + b.connectionsAccepted
            s.connectionsClosed = a.connectionsClosed + b.connectionsClosed
            s.acceptErrors = a.acceptErrors + b.acceptErrors
            s.tlsHandshakeFailures = a.tlsHandshakeFailures + b.tlsHandshakeFailures
            s.backend = a.backend == b.backend ? a.backend : nil
            return s
        }
    }
}
