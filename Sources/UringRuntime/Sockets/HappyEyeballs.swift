import Glibc

/// Connecting to a host with several addresses: one after another, or staggered as RFC 8305
/// ("happy eyeballs") asks. Follows asyncio's `create_connection`, `_connect_sock`,
/// `_interleave_addrinfos` and `staggered.staggered_race`.
extension EventLoop {
    /// Connects to the first of `addresses` that accepts; returns the connected descriptor.
    ///
    /// - Parameters:
    ///   - addresses: Where to connect, in the resolver's order.
    ///   - localAddress: Bound before connecting; addresses of another family are skipped.
    ///   - happyEyeballsDelay: nil tries the addresses one after another; otherwise each attempt
    ///     starts this long after the previous one, or as soon as it fails, the first to connect
    ///     wins and the others are cancelled and closed.
    ///   - interleave: How many addresses of the first family go before alternating families;
    ///     nil means 1 with a delay and no reordering without one, 0 keeps the resolver's order.
    /// - Throws: The attempts' error when all failed alike, else ``ConnectionAttemptsError``;
    ///   ``StreamError/invalidArgument(_:)`` for a negative delay or interleave, or no addresses;
    ///   `CancellationError` when the task was cancelled before any attempt connected.
    package func connect(
        toAnyOf addresses: [SocketAddress], from localAddress: SocketAddress?, happyEyeballsDelay: Duration?,
        interleave: Int?
    ) async throws -> Int32 {
        precondition(inEventLoop)
        if let happyEyeballsDelay, happyEyeballsDelay < .zero {
            throw StreamError.invalidArgument("happyEyeballsDelay must not be negative, not \(happyEyeballsDelay)")
        }
        if let interleave, interleave < 0 {
            throw StreamError.invalidArgument("interleave must not be negative, not \(interleave)")
        }
        guard !addresses.isEmpty else { throw StreamError.invalidArgument("getaddrinfo() returned no address") }
        let firstFamilyCount = interleave ?? (happyEyeballsDelay == nil ? 0 : 1)
        let ordered = firstFamilyCount > 0 ? Self.interleaved(addresses, firstFamilyCount: firstFamilyCount) : addresses
        if let happyEyeballsDelay {
            return try await staggeredConnect(to: ordered, from: localAddress, delay: happyEyeballsDelay)
        }
        var failures: [(address: SocketAddress, error: StreamError)] = []
        for address in ordered {
            switch await attempt(address, from: localAddress) {
            case .connected(let fd): return fd
            case .failed(let error): failures.append((address, error))
            case .cancelled: throw CancellationError()
            }
        }
        throw ConnectionAttemptsError.combining(failures)
    }

    /// `addresses` with families alternating, after `firstFamilyCount - 1` extra addresses of the
    /// first family (RFC 8305 section 4, "First Address Family Count"); each family keeps its order.
    package static func interleaved(_ addresses: [SocketAddress], firstFamilyCount: Int) -> [SocketAddress] {
        var families: [[SocketAddress]] = []
        for address in addresses {
            if let index = families.firstIndex(where: { $0[0].family == address.family }) {
                families[index].append(address)
            } else {
                families.append([address])
            }
        }
        guard !families.isEmpty else { return [] }
        let lead = min(max(firstFamilyCount - 1, 0), families[0].count)
        var result = Array(families[0].prefix(lead))
        families[0].removeFirst(lead)
        let longest = families.map(\.count).max() ?? 0
        for round in 0..<longest {
            for family in families where round < family.count { result.append(family[round]) }
        }
        return result
    }

    private enum AttemptOutcome: Sendable {
        case connected(Int32)
        case failed(StreamError)
        case cancelled
    }

    /// One connect, as asyncio's `_connect_sock`: a local address of another family makes the
    /// attempt fail without a socket.
    private func attempt(_ address: SocketAddress, from localAddress: SocketAddress?) async -> AttemptOutcome {
        if let localAddress, localAddress.family != address.family {
            return .failed(
                .invalidArgument(
                    "no local address of the family of \(address) to bind to: localAddress is \(localAddress)"))
        }
        do {
            return .connected(try await connect(to: address, from: localAddress))
        } catch let error as StreamError {
            return .failed(error)
        } catch {
            return .cancelled
        }
    }

    private enum RaceEvent: Sendable {
        case attempt(index: Int, outcome: AttemptOutcome)
        case delayElapsed(after: Int)
    }

    /// RFC 8305 section 5: attempt `i + 1` starts `delay` after attempt `i` started, or at once when
    /// attempt `i` fails; the first connected socket wins, every other attempt is cancelled
    /// (`IORING_OP_ASYNC_CANCEL`) and any socket that connected anyway is closed.
    private func staggeredConnect(to addresses: [SocketAddress], from localAddress: SocketAddress?, delay: Duration)
        async throws -> Int32
    {
        let (winner, failures) = await withTaskGroup(of: RaceEvent.self) { group in
            var started = 0
            var running = 0
            var winner: Int32?
            var failures: [(index: Int, address: SocketAddress, error: StreamError)] = []

            func startNext() {
                let index = started
                let address = addresses[index]
                started += 1
                running += 1
                group.addTask(executorPreference: self) {
                    .attempt(index: index, outcome: await self.attempt(address, from: localAddress))
                }
                if started < addresses.count {
                    group.addTask(executorPreference: self) {
                        // Cancelled (a winner, or the caller gave up): the event is ignored anyway.
                        try? await self.sleep(for: delay)
                        return .delayElapsed(after: index)
                    }
                }
            }

            startNext()
            while let event = await group.next() {
                switch event {
                case .attempt(let index, let outcome):
                    running -= 1
                    switch outcome {
                    case .connected(let fd):
                        if winner == nil {
                            winner = fd
                            group.cancelAll()
                        } else {
                            // Connected while the winner's cancellation was on its way.
                            Glibc.close(fd)
                        }
                    case .failed(let error):
                        failures.append((index, addresses[index], error))
                        if winner == nil, index == started - 1, started < addresses.count, !Task.isCancelled {
                            startNext()
                        }
                    case .cancelled:
                        break
                    }
                case .delayElapsed(let after):
                    if winner == nil, after == started - 1, started < addresses.count, !Task.isCancelled {
                        startNext()
                    }
                }
                // Only stale delays could be left: end them instead of waiting them out.
                if running == 0 && (winner != nil || started == addresses.count || Task.isCancelled) {
                    group.cancelAll()
                }
            }
            return (winner, failures.sorted { $0.index < $1.index }.map { (address: $0.address, error: $0.error) })
        }
        if let winner { return winner }
        if Task.isCancelled || failures.isEmpty { throw CancellationError() }
        throw ConnectionAttemptsError.combining(failures)
    }
}
