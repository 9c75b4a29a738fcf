/// A server's idle timeout on one loop: the connections of that server living on the loop, and a
/// sweep that aborts those with no receive or send completion for `timeout`.
///
/// No timer per connection and no clock read per message: each socket counts its completions
/// (``SocketTransport/activity``), and one task per loop and server wakes every quarter of the
/// timeout on the loop's own timer (``EventLoop/sleep(for:)``), compares each count with the one it
/// saw last, and notes the time of the sweep that saw it change. A connection is so aborted between
/// `timeout` and `1.25 × timeout` after its last activity. The task runs only while the loop has
/// connections to watch.
final class IdleSweep: @unchecked Sendable {
    // @unchecked Sendable: the server that owns it is Sendable, but every mutable property is
    // touched on `loop`'s thread only (connections register and close there, the sweep task runs
    // there with the loop as its executor preference).
    private struct Watched {
        let socket: SocketTransport
        var seen: UInt64
        var quietSince: ContinuousClock.Instant
    }

    let loop: EventLoop
    let timeout: Duration
    private var watched: [ObjectIdentifier: Watched] = [:]
    private var sweeping = false

    init(loop: EventLoop, timeout: Duration) {
        self.loop = loop
        self.timeout = timeout
    }

    /// Starts watching `socket`; on the loop.
    func watch(_ socket: SocketTransport) {
        loop.assertInEventLoop()
        watched[ObjectIdentifier(socket)] = Watched(socket: socket, seen: socket.activity, quietSince: .now)
        guard !sweeping else { return }
        sweeping = true
        Task(executorPreference: loop) { await self.sweepWhileWatching() }
    }

    /// `socket` has closed; on the loop.
    func forget(_ socket: SocketTransport) {
        loop.assertInEventLoop()
        watched[ObjectIdentifier(socket)] = nil
    }

    private func sweepWhileWatching() async {
        // At least a millisecond: a tiny timeout would otherwise spin the loop.
        let interval = max(timeout / 4, .milliseconds(1))
        while !watched.isEmpty {
            // Throws only when the loop stops (its connections are aborted then) or the ring failed.
            do { try await loop.sleep(for: interval) } catch { break }
            sweep(now: .now)
        }
        sweeping = false
    }

    private func sweep(now: ContinuousClock.Instant) {
        var expired: [SocketTransport] = []
        for (key, entry) in watched {
            let activity = entry.socket.activity
            if activity != entry.seen {
                watched[key] = Watched(socket: entry.socket, seen: activity, quietSince: now)
            } else if now - entry.quietSince >= timeout {
                watched[key] = nil
                expired.append(entry.socket)
            }
        }
        // Aborted with the error, not closed: an idle peer may be one that no longer reads, and a
        // graceful close would then wait for a flush (or a TLS close_notify) that never comes.
        for socket in expired { socket.abort(failing: StreamError.timedOut) }
    }
}
