import Foundation
import Glibc
import TestChildProcesses
import Testing

@testable import UringRing
@testable import UringRuntime

/// The default loop count: affinity and cgroup quota, parsed from the files' real formats.
@Suite(.timeLimit(.minutes(1)))
struct CPUAllowanceTests {
    @Test func cpuMaxQuotasRoundUp() {
        #expect(CPUAllowance.quota(cpuMax: "max 100000\n") == nil)
        #expect(CPUAllowance.quota(cpuMax: "200000 100000\n") == 2)
        #expect(CPUAllowance.quota(cpuMax: "150000 100000\n") == 2)
        #expect(CPUAllowance.quota(cpuMax: "50000 100000\n") == 1)
        #expect(CPUAllowance.quota(cpuMax: "1000 100000") == 1)
        #expect(CPUAllowance.quota(cpuMax: "") == nil)
        #expect(CPUAllowance.quota(cpuMax: "garbage") == nil)
    }

    @Test func cgroupV1QuotasRoundUp() {
        #expect(CPUAllowance.quota(cfsQuota: "-1\n", cfsPeriod: "100000\n") == nil)
        #expect(CPUAllowance.quota(cfsQuota: "250000\n", cfsPeriod: "100000\n") == 3)
        #expect(CPUAllowance.quota(cfsQuota: "x", cfsPeriod: "100000") == nil)
    }

    @Test func procSelfCgroupLinesGiveThePaths() {
        let v2 = "0::/kubepods.slice/pod1234/cri-abc.scope\n"
        #expect(CPUAllowance.cgroupV2Path(v2) == "/kubepods.slice/pod1234/cri-abc.scope")
        let hybrid = """
            12:cpu,cpuacct:/docker/abc
            4:memory:/docker/abc
            0::/
            """
        #expect(CPUAllowance.cgroupV2Path(hybrid) == "/")
        #expect(CPUAllowance.cgroupV1Path(hybrid, controller: "cpu") == "/docker/abc")
        #expect(CPUAllowance.cgroupV1Path(hybrid, controller: "cpuacct") == "/docker/abc")
        #expect(CPUAllowance.cgroupV1Path(hybrid, controller: "pids") == nil)
        #expect(CPUAllowance.cgroupV2Path("1:cpu:/x\n") == nil)
    }

    @Test func theSmallestQuotaAlongTheCgroupPathCounts() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cgroup-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pod = root + "/kubepods/pod1"
        let container = pod + "/ctr"
        try FileManager.default.createDirectory(atPath: container, withIntermediateDirectories: true)
        try "max 100000\n".write(toFile: root + "/cpu.max", atomically: true, encoding: .utf8)
        try "150000 100000\n".write(toFile: pod + "/cpu.max", atomically: true, encoding: .utf8)
        try "400000 100000\n".write(toFile: container + "/cpu.max", atomically: true, encoding: .utf8)
        #expect(CPUAllowance.cgroupQuota(root: root, membership: "0::/kubepods/pod1/ctr\n") == 2)
        // Unlimited all the way up: no quota.
        #expect(CPUAllowance.cgroupQuota(root: root, membership: "0::/\n") == nil)
        // cgroup v1 files under the cpu controller's mount.
        let v1 = root + "/cpu,cpuacct/docker/abc"
        try FileManager.default.createDirectory(atPath: v1, withIntermediateDirectories: true)
        try "300000\n".write(toFile: v1 + "/cpu.cfs_quota_us", atomically: true, encoding: .utf8)
        try "100000\n".write(toFile: v1 + "/cpu.cfs_period_us", atomically: true, encoding: .utf8)
        #expect(CPUAllowance.cgroupQuota(root: root, membership: "4:cpu,cpuacct:/docker/abc\n") == 3)
    }

    @Test func liveCountIsWithinTheAffinityMask() throws {
        let affinity = try #require(SystemSupport.affinityCPUCount())
        let count = EventLoopGroup.defaultLoopCount
        #expect(count >= 1)
        #expect(count <= affinity)
    }

    @Test func countFollowsAThreadsAffinity() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") else { return }
        // Affinity is per thread: pin a thread of our own (never a pool thread) to CPU 0 with
        // taskset and read the count on it.
        let (pinned, status) = try await onThread { () throws -> (Int, Int32) in
            // This thread's id, from /proc/thread-self (a link to PID/task/TID).
            let tid = try #require(
                FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last)
            let taskset = Process()
            taskset.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
            taskset.arguments = ["-p", "-c", "0", String(tid)]
            taskset.standardOutput = FileHandle.nullDevice
            // Counted: while it starts, the child holds copies of other tests' sockets.
            try ChildProcesses.run(taskset)
            taskset.waitUntilExit()
            return (EventLoopGroup.defaultLoopCount, taskset.terminationStatus)
        }
        try #require(status == 0)
        #expect(pinned == 1)
    }

    @Test func runStartsAGroupAndShutsItDown() async throws {
        let (count, onFirstLoop, loops) = try await onThread {
            try EventLoop.run(loopCount: 2) { group in
                (group.loops.count, EventLoop.current === group.loops[0], group.loops)
            }
        }
        #expect(count == 2)
        #expect(onFirstLoop)
        // Shut down before run returned: new I/O on its loops fails instead of waiting forever.
        for loop in loops {
            await #expect(throws: StreamError.self) { try await loop.ensureRing() }
        }
    }

    @Test func runRethrowsWhatMainThrew() async throws {
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await onThread { try EventLoop.run(loopCount: 2) { _ -> Int in throw Boom() } }
        }
    }
}
