import UringRing

/// One zero-copy send in flight, the completion target of its SQE. It holds the chunks the send
/// reads from until the kernel's notification says it no longer reads them; each send holds its
/// own, so a connection that keeps sending frees memory send by send instead of all at once.
///
/// The result completion goes to the transport (it drives the write queue and the next send). The
/// notification can take a round trip or, to a peer that stopped reading, forever: neither the
/// connection's close nor the loop's shutdown waits for it.
// Package, not internal: an internal subclass of this public class with its own initializer made
// Swift 6.3 warn of an infinite recursion in code it synthesizes.
package final class ZeroCopySend: CompletionTarget {
    private let loop: EventLoop
    /// Until the result arrives; then only the held memory remains.
    private var transport: SocketTransport?
    private var held: [Bytes]
    /// Told when the kernel copied after all; weak, as the notification may outlive the connection
    /// (zero-copy sends are large and few, so the weak reference's cost does not matter).
    private weak var owner: SocketTransport?

    package init(transport: SocketTransport, holding chunks: [Bytes]) {
        loop = transport.loop
        self.transport = transport
        owner = transport
        held = chunks
    }

    package override func complete(_ completion: Completion, tag: UInt64) {
        if completion.flags & CompletionFlags.notification != 0 {
            if completion.zeroCopyWasCopied {
                // The route copies anyway (loopback, a device without scatter-gather).
                loop.counters.zeroCopyFallbacks += 1
                owner?.zeroCopyWasCopied()
            }
            held = []
            return
        }
        guard let transport else { return }
        self.transport = nil
        if completion.hasMore {
            loop.stopAwaitingAtShutdown(self)
        } else {
            held = []  // no notification follows (the send failed)
        }
        transport.zeroCopySendCompleted(completion)
    }
}
