import Testing

@testable import UringStreams

/// The writer's TLS slot: set once, read often, released with its owner.
struct SetOnceReferenceTests {
    final class Box: Sendable {}

    @Test func theFirstStoreWinsAndEveryReferenceIsReleased() {
        weak var first: Box?
        weak var second: Box?
        do {
            let slot = SetOnceReference<Box>()
            #expect(slot.load() == nil)
            let a = Box()
            let b = Box()
            first = a
            second = b
            #expect(slot.storeIfNil(a) === a)
            #expect(slot.storeIfNil(b) === a)
            #expect(slot.load() === a)
        }
        // The loser kept no extra reference; the winner went with the slot.
        #expect(second == nil)
        #expect(first == nil)
    }
}
