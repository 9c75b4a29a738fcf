import UringRing

// Free receive buffers beyond a warm reserve give their pages back once unused for an interval,
// and a ring grown under a burst shrinks back: a burst would otherwise keep up to the whole pool
// (16 MiB by default) resident for the loop's lifetime. A timer in the ring, armed only while
// there is such work, wakes even an idle loop.
extension EventLoop {
    /// Arms the release timer when free buffers may hold pages or the ring has grown, and it is not
    /// armed yet; once a turn, before the loop enters the ring.
    @inline(__always)
    func armBufferReleaseIfNeeded() {
        guard let timespec = bufferReleaseTimespec, !bufferReleaseArmed, !isStopping,
            bufferPool.mayReleaseMemory
        else { return }
        bufferReleaseArmed = true
        ring.prepare(.timeout(timespec: UnsafeMutableRawPointer(timespec)), userData: ReservedUserData.bufferRelease)
    }

    /// The release timer expired (or was cancelled by shutdown). The next turn arms it again if
    /// there is more to do.
    func bufferReleaseTimerEnded() {
        bufferReleaseArmed = false
        guard !isStopping, let bufferPool else { return }
        bufferPool.endReleaseInterval()
    }
}
