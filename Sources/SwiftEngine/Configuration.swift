import Glibc

/// The engine's settings. Environment variables give the starting values
/// (for applications that offer no ctrl access); ctrl commands, from code or
/// openssl.cnf, override them.
struct Configuration: Sendable {
    /// 0 means one worker per online CPU.
    var threads = 0
    var queueDepth = 1024
    var syncOffload = false
    var statsFile: String?
    /// Where live counters are published for `engine-loader stats` (nil: nowhere).
    var statsDirectory: String? = StatsPublisher.defaultDirectory
    /// Completions a worker may hold back while more work is queued (1: none),
    /// and for how long at most.
    var notifyBatch = 64
    var notifyDelayMicroseconds = 1000
    /// How long an idle worker watches for new work before sleeping (0: never).
    var idleSpinMicroseconds = 50
    /// With every worker busy and this many operations queued, one that no
    /// 8-lane call would take is computed by its caller (0: never; nil: four
    /// queued per worker, when each worker has its next operations waiting and
    /// a hand-off would only add a wake-up to the same work; at one per worker
    /// short bursts below capacity met it too, and HAProxy's two threads
    /// then computed in their event loops).
    var callerRunsDepth: Int?
    /// Latency added before each operation, as a hardware accelerator would have (tests).
    var workerDelayMicroseconds = 0
    /// Like operations queued together share 8-lane calls where the CPU can run them.
    var multibuffer = true
    /// Fewest like operations for one 8-lane call; 0: the crossover measured per kind.
    var multibufferMinimumFill = 0
    /// A key store's: how long a job waits for the device (0: as long as it takes).
    var deadlineMilliseconds = 0
    /// A key store's: workers started in place of ones stuck past the deadline, at most at once.
    var spareThreads = 0

    static let threadLimit = 1024
    static let queueDepthLimit = 1 << 20
    static let notifyBatchLimit = 64
    static let idleSpinLimit = 10_000
    static let workerDelayLimit = 1_000_000
    static let notifyDelayLimit = 100_000
    static let deadlineLimit = 3_600_000

    var workerCount: Int {
        threads > 0 ? threads : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    var effectiveCallerRunsDepth: Int { callerRunsDepth ?? 4 * workerCount }

    /// Applies one numeric setting; false if the name is unknown or the value out of range.
    mutating func set(_ name: String, to value: Int) -> Bool {
        switch name {
        case "THREADS" where (0...Self.threadLimit).contains(value):
            threads = value
        case "QUEUE_DEPTH" where (1...Self.queueDepthLimit).contains(value):
            queueDepth = value
        case "SYNC_OFFLOAD" where value == 0 || value == 1:
            syncOffload = value == 1
        case "NOTIFY_BATCH" where (1...Self.notifyBatchLimit).contains(value):
            notifyBatch = value
        case "NOTIFY_DELAY_USEC" where (0...Self.notifyDelayLimit).contains(value):
            notifyDelayMicroseconds = value
        case "IDLE_SPIN_USEC" where (0...Self.idleSpinLimit).contains(value):
            idleSpinMicroseconds = value
        case "CALLER_RUNS_DEPTH" where (0...Self.queueDepthLimit).contains(value):
            callerRunsDepth = value
        case "MULTIBUFFER" where value == 0 || value == 1:
            multibuffer = value == 1
        case "MULTIBUFFER_MIN_FILL" where (0...LanePolicy.width).contains(value):
            multibufferMinimumFill = value
        case "WORKER_DELAY_USEC" where (0...Self.workerDelayLimit).contains(value):
            workerDelayMicroseconds = value
        case "DEADLINE_MSEC" where (0...Self.deadlineLimit).contains(value):
            deadlineMilliseconds = value
        case "SPARE_THREADS" where (0...Self.threadLimit).contains(value):
            spareThreads = value
        default:
            return false
        }
        return true
    }

    mutating func set(_ name: String, to value: String) -> Bool {
        switch name {
        case "STATS_FILE":
            statsFile = value.isEmpty ? nil : value
            return true
        case "STATS_DIR":
            statsDirectory = value.isEmpty ? nil : value
            return true
        default:
            guard let number = Int(value) else { return false }
            return set(name, to: number)
        }
    }

    static let environmentNames = ["THREADS", "QUEUE_DEPTH", "SYNC_OFFLOAD", "NOTIFY_BATCH", "NOTIFY_DELAY_USEC", "IDLE_SPIN_USEC", "CALLER_RUNS_DEPTH", "WORKER_DELAY_USEC", "MULTIBUFFER", "MULTIBUFFER_MIN_FILL", "STATS_FILE", "STATS_DIR"]
    /// Settings only a key store's own workers have (their calls wait on a device).
    static let keyStoreNames = ["DEADLINE_MSEC", "SPARE_THREADS"]
    /// Every setting a provider instance's openssl.cnf section may give.
    static let sectionNames = environmentNames + keyStoreNames

    /// Defaults overridden by SWIFTASYNC_<NAME>; invalid values are ignored
    /// with a warning on stderr, since there is no caller to return an error to.
    static func fromEnvironment() -> Configuration {
        var configuration = Configuration()
        for name in environmentNames {
            guard let raw = getenv("SWIFTASYNC_" + name) else { continue }
            let value = String(cString: raw)
            if !configuration.set(name, to: value) {
                let warning = "swiftasync: ignoring SWIFTASYNC_\(name)=\(value): invalid value\n"
                _ = write(STDERR_FILENO, warning, warning.utf8.count)
            }
        }
        return configuration
    }
}
