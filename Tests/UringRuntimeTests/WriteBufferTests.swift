import Glibc
import Testing

@testable import UringRuntime

/// The write side's state machine on its own: no ring, no socket, no protocol. Each case checks
/// the effects a transport would carry out.
@Suite struct WriteBufferTests {
    /// iovec memory for flushes.
    private final class Iovecs {
        let pointer = UnsafeMutablePointer<iovec>.allocate(capacity: 8)
        deinit { pointer.deallocate() }
    }

    @Test func theFirstWriteSchedulesOneFlush() {
        var buffer = WriteBuffer()
        let r1 = buffer.write(Bytes("a"))
        #expect(r1 == .init(scheduleFlush: true))
        let r2 = buffer.write(Bytes("b"))
        #expect(r2 == .init(), "already scheduled")
        #expect(buffer.sending == .scheduled)
        #expect(buffer.buffered == 2)
    }

    @Test func queuedWritesGoOutAsOneGatheredSend() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("ab"))
        _ = buffer.write(Bytes("cde"))
        let r3 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r3 == .send(iovecs: 2, bytes: 5))
        #expect(buffer.sending == .inFlight)
        let r4 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r4 == .nothing, "one send at a time")
        _ = buffer.write(Bytes("f"))
        #expect(buffer.sending == .inFlight, "a write during a send waits for its completion")
        let done = buffer.sendCompleted(sent: 5)
        #expect(done.flushAgain)
        let r5 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r5 == .send(iovecs: 1, bytes: 1))
    }

    @Test func aShortSendLeavesTheRestQueuedInOrder() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("hello"))
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        _ = buffer.sendCompleted(sent: 2)
        #expect(buffer.buffered == 3)
        let r6 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r6 == .send(iovecs: 1, bytes: 3))
        let rest = UnsafeRawBufferPointer(start: iovecs.pointer[0].iov_base, count: iovecs.pointer[0].iov_len)
        #expect(Array(rest) == Array("llo".utf8))
    }

    @Test func theProtocolPausesOnceAboveHighAndResumesAtLow() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.setLimits(high: 10, low: 4)
        #expect(!buffer.write(Bytes("12345678")).pauseProtocol)
        let r7 = buffer.write(Bytes("901"))
        #expect(r7.pauseProtocol, "11 > 10")
        #expect(!buffer.write(Bytes("2")).pauseProtocol, "told once")
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        var effects = buffer.sendCompleted(sent: 7)  // 5 left: above low
        #expect(!effects.resumeProtocol && !effects.wakeDrainers)
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        effects = buffer.sendCompleted(sent: 1)  // 4 left: at low
        #expect(effects.resumeProtocol && effects.wakeDrainers)
        #expect(!buffer.protocolPaused)
    }

    @Test func newWaterMarksPauseOrResumeAtOnce() {
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes(Array(repeating: 0, count: 100)))
        let r8 = buffer.setLimits(high: 50, low: 10)
        #expect(r8.pauseProtocol)
        let raised = buffer.setLimits(high: 1000, low: 200)
        #expect(raised.resumeProtocol && raised.wakeDrainers)
    }

    @Test func writesAfterCloseOrEOFAreDroppedAndRemembered() {
        var closing = WriteBuffer()
        let r9 = closing.requestClose()
        #expect(r9)
        let again = closing.requestClose()
        #expect(!again, "only the first close counts")
        #expect(closing.isClosing)
        let r10 = closing.write(Bytes("late"))
        #expect(r10 == .init())
        #expect(closing.droppedWrite && closing.buffered == 0)

        var halfClosed = WriteBuffer()
        let r11 = halfClosed.requestEOF()
        #expect(r11)
        #expect(!halfClosed.isClosing, "writeEOF does not close")
        _ = halfClosed.write(Bytes("late"))
        #expect(halfClosed.droppedWrite)
    }

    @Test func anEmptyQueueEndsInCloseOrShutdown() {
        let iovecs = Iovecs()
        var closing = WriteBuffer()
        _ = closing.write(Bytes("x"))
        _ = closing.requestClose()
        let r12 = closing.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r12 == .send(iovecs: 1, bytes: 1))
        let r13 = closing.sendCompleted(sent: 1)
        #expect(r13.flushAgain)
        let r14 = closing.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r14 == .close)

        var halfClosed = WriteBuffer()
        _ = halfClosed.requestEOF()
        let r15 = halfClosed.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r15 == .shutdownWrite)
    }

    /// Issue 9 §3.12: an abort during a send emptied the buffer, then the send's completion
    /// subtracted its bytes again and `writeBufferSize` went negative.
    @Test func anAbortDuringASendNeverDrivesTheSizeNegative() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("abcdef"))
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        buffer.abort()
        #expect(buffer.buffered == 0)
        #expect(buffer.inFlightChunks.count == 1, "the kernel still reads the chunk in flight")
        let r16 = buffer.sendCompleted(sent: 6)
        #expect(r16 == .init())
        #expect(buffer.buffered == 0)
        #expect(!buffer.hasQueuedBytes)
        let r17 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r17 == .nothing, "nothing goes out after abort")
    }

    @Test func withoutIovecMemoryTheFlushStaysScheduled() {
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("x"))
        let r18 = buffer.flush(iovecs: nil, capacity: 0)
        #expect(r18 == .nothing)
        #expect(buffer.sending == .scheduled)
    }

    @Test func aRefusedSendKeepsItsBytesForTheNextTry() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("again"))
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        let r19 = buffer.sendRefused()
        #expect(r19)
        #expect(buffer.buffered == 5)
        let r20 = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        #expect(r20 == .send(iovecs: 1, bytes: 5))
    }

    @Test func aFailedSendLeavesTheWriteSideIdle() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        _ = buffer.write(Bytes("x"))
        _ = buffer.flush(iovecs: iovecs.pointer, capacity: 8)
        buffer.sendFailed()
        #expect(buffer.sending == .idle)
    }

    @Test func iovecCapacityBoundsOneSend() {
        let iovecs = Iovecs()
        var buffer = WriteBuffer()
        for _ in 0..<5 { _ = buffer.write(Bytes("ab")) }
        let r21 = buffer.flush(iovecs: iovecs.pointer, capacity: 3)
        #expect(r21 == .send(iovecs: 3, bytes: 6))
        _ = buffer.sendCompleted(sent: 6)
        let r22 = buffer.flush(iovecs: iovecs.pointer, capacity: 3)
        #expect(r22 == .send(iovecs: 2, bytes: 4))
    }
}
