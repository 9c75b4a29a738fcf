import Synchronization

/// An acquire fence, for memory another thread released without a lock we share.
@inline(__always)
func atomicFenceAcquire() {
    atomicMemoryFence(ordering: .acquiring)
}
