import CEngineShim

/// When like operations share one 8-lane (multi-buffer) call. An 8-lane call
/// costs about as much as eight scalar operations however many lanes are
/// filled, so a worker gathers like operations only from what is already
/// queued, and only when there are at least `crossover` of them; below that,
/// it takes one and computes it as before. Nothing ever waits for a lane to fill.
struct LanePolicy: Sendable {
    static let width = Int(SA_MAX_LANES)

    /// Fewest lanes for which one 8-lane call (with its public-key check) beats
    /// scalar calls: the call's time over one scalar operation's, rounded up.
    /// Measured on an AMD EPYC (Zen 4, IFMA on 256-bit units) with OpenSSL 3.0,
    /// one 8-lane call against one scalar operation: RSA-2048 1,090 µs against
    /// 243; RSA-3072 7,910 against 1,755; RSA-4096 11,710 against 3,986; X25519
    /// 53 against 34; P-256 keygen 27 against 8.2, ECDH 122 against 45.5,
    /// ECDSA 45 against 19.6; P-384 keygen 94 against 753, ECDH 378 against
    /// 734, ECDSA 142 against 777 (OpenSSL 3.0 has no fast P-384: one lane pays);
    /// P-521 keygen 126 against 141, ECDH 566 against 292, ECDSA 246 against 261.
    static func crossover(_ algorithm: sa_algorithm, _ laneClass: sa_lane_class) -> Int? {
        switch laneClass {
        case SA_LANES_RSA2048, SA_LANES_RSA3072: 5
        case SA_LANES_RSA4096: 3
        case SA_LANES_X25519: 2
        case SA_LANES_P256: algorithm == SA_ALG_EC_KEYGEN ? 4 : 3
        case SA_LANES_P384: 1
        case SA_LANES_P521: algorithm == SA_ALG_ECDH_DERIVE ? 2 : 1
        default: nil
        }
    }

    static let classes = [SA_LANES_RSA2048, SA_LANES_RSA3072, SA_LANES_RSA4096, SA_LANES_X25519,
                          SA_LANES_P256, SA_LANES_P384, SA_LANES_P521]

    /// Classes this build and CPU can run, asked once.
    private let available: Set<UInt32>
    let enabled: Bool
    /// Set (1-8): used for every kind instead of its crossover.
    let minimumFillOverride: Int

    init(enabled: Bool, minimumFillOverride: Int = 0) {
        self.enabled = enabled
        self.minimumFillOverride = minimumFillOverride
        available = Set(Self.classes.filter { sa_lanes_available($0) != 0 }.map(\.rawValue))
    }

    /// The key under which an operation shares calls: 0 for never.
    static func key(of item: UnsafeMutableRawPointer) -> Int {
        let operation = item.assumingMemoryBound(to: sa_operation.self).pointee
        guard operation.lane_class != SA_LANES_NONE else { return 0 }
        return Int(operation.algorithm.rawValue) << 8 | Int(operation.lane_class.rawValue)
    }

    /// Fewest queued like operations worth one 8-lane call; nil: never.
    func minimumFill(forKey key: Int) -> Int? {
        let laneClass = sa_lane_class(UInt32(key & 0xff))
        guard enabled, available.contains(laneClass.rawValue) else { return nil }
        return minimumFillOverride > 0 ? minimumFillOverride
            : Self.crossover(sa_algorithm(UInt32(key >> 8)), laneClass)
    }

    /// Whether 8-lane calls run here, or the word that says why not.
    static func status(enabled: Bool) -> String {
        if let reason = sa_lanes_unavailable_reason() { return String(cString: reason) }
        return enabled ? "in_use" : "off_by_ctrl"
    }
}
