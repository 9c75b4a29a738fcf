/// libFuzzer's entry point (its `main` comes with `-sanitize=fuzzer`): decodes the input into a
/// program of feeds and reads, runs it against a real StreamReader and the reference model, and
/// traps on the first difference.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let program = Program(decoding: UnsafeBufferPointer(start: data, count: data == nil ? 0 : size))
    var driver = Driver(program: program, executor: executor)
    driver.run()
    return 0
}

/// One executor for the whole process: each input leaves its queue empty.
private let executor = ManualExecutor()
