import Glibc
import UringRing

/// How many CPUs this process may actually use: the fewer of its affinity mask and its cgroup's
/// CPU quota. `_SC_NPROCESSORS_ONLN` counts the machine's CPUs, which in a container limited to
/// two CPUs of a 64-core host would start 64 loops that fight over two CPUs' worth of time.
enum CPUAllowance {
    /// The CPU count the process may use, at least 1.
    static func current() -> Int {
        let online = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        var count = SystemSupport.affinityCPUCount() ?? online
        if let quota = cgroupQuota() { count = min(count, quota) }
        return max(1, count)
    }

    /// The CPU quota of the process's cgroup (v2 `cpu.max`, else v1 `cpu.cfs_quota_us` over
    /// `cpu.cfs_period_us`), rounded up; nil when there is none or it cannot be read.
    ///
    /// - Parameters:
    ///   - root: Where the cgroup file system is mounted (tests point it at a fixture tree).
    ///   - membership: `/proc/self/cgroup`'s contents; nil reads them.
    static func cgroupQuota(root: String = "/sys/fs/cgroup", membership: String? = nil) -> Int? {
        guard let membership = membership ?? readSmallFile("/proc/self/cgroup") else { return nil }
        if let path = cgroupV2Path(membership) {
            // A quota on any ancestor limits this cgroup too (a Kubernetes pod's limit sits one
            // level above its containers'): the smallest along the path counts.
            var quota: Int?
            var found = false
            var components = path.split(separator: "/").map(String.init)
            while true {
                let directory = root + components.map { "/" + $0 }.joined()
                if let contents = readSmallFile(directory + "/cpu.max") {
                    found = true
                    if let level = self.quota(cpuMax: contents) { quota = min(quota ?? level, level) }
                }
                if components.isEmpty { break }
                components.removeLast()
            }
            if found { return quota }
        }
        // cgroup v1: the cpu controller's hierarchy, mounted at <root>/cpu (or cpu,cpuacct).
        if let path = cgroupV1Path(membership, controller: "cpu") {
            for mount in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
                let directory = root + "/" + mount + (path == "/" ? "" : path)
                if let quota = readSmallFile(directory + "/cpu.cfs_quota_us"),
                    let period = readSmallFile(directory + "/cpu.cfs_period_us")
                {
                    return self.quota(cfsQuota: quota, cfsPeriod: period)
                }
            }
        }
        return nil
    }

    /// The cgroup v2 path in `/proc/self/cgroup` contents: the `0::PATH` line.
    static func cgroupV2Path(_ contents: String) -> String? {
        for line in contents.split(separator: "\n") where line.hasPrefix("0::") {
            let path = line.dropFirst(3)
            return path.isEmpty ? nil : String(path)
        }
        return nil
    }

    /// The cgroup v1 path of `controller` in `/proc/self/cgroup` contents (`ID:ctrl,ctrl:PATH`).
    static func cgroupV1Path(_ contents: String, controller: String) -> String? {
        for line in contents.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[1].split(separator: ",").contains(Substring(controller)) else {
                continue
            }
            return fields[2].isEmpty ? nil : String(fields[2])
        }
        return nil
    }

    /// The CPUs a v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD") allows, rounded up; nil for "max"
    /// (no limit) or contents that do not parse.
    static func quota(cpuMax: String) -> Int? {
        let fields = cpuMax.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, fields[0] != "max", let quota = Int(fields[0]), let period = Int(fields[1]) else {
            return nil
        }
        return cpus(quota: quota, period: period)
    }

    /// The CPUs a v1 quota and period allow, rounded up; nil when the quota is -1 (no limit).
    static func quota(cfsQuota: String, cfsPeriod: String) -> Int? {
        let trim = { (text: String) in text.filter { !$0.isWhitespace } }
        guard let quota = Int(trim(cfsQuota)), let period = Int(trim(cfsPeriod)) else { return nil }
        return cpus(quota: quota, period: period)
    }

    private static func cpus(quota: Int, period: Int) -> Int? {
        guard quota > 0, period > 0 else { return nil }
        // 1.5 CPUs of time is best served by two loops: rounding down would leave half unused.
        return max(1, (quota + period - 1) / period)
    }

    /// A small text file (procfs, cgroupfs), or nil when it cannot be read. Plain reads: these
    /// files are tiny and read once, before any loop exists.
    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 16 {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
