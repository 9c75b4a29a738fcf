extension Bytes {
    /// Bytes written in place by `fill`, which gets `capacity` bytes of fresh heap storage and returns
    /// how many it wrote (at most `capacity`). For producers such as a TLS engine that write straight
    /// into the memory a reader will get, saving the copy out of a scratch buffer.
    package init(capacity: Int, fill: (UnsafeMutableRawBufferPointer) -> Int) {
        var written = 0
        let storage = ByteStorage.make(count: capacity) { written = fill($0) }
        precondition(written >= 0 && written <= capacity, "fill wrote \(written) of \(capacity) bytes")
        if written == 0 {
            self.init()
        } else {
            self.init(owner: storage, base: storage.baseAddress, count: written)
        }
    }
}
