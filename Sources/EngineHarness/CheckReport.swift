/// The lines of one section of `engine-loader check`, "ok" or "FAIL" each.
public struct CheckReport {
    public let section: String
    public var lines: [String] = []
    public var failures = 0

    public init(section: String) { self.section = section }

    public mutating func note(_ ok: Bool, _ line: String) {
        lines.append("\(ok ? "ok  " : "FAIL") \(section): \(line)")
        if !ok { failures += 1 }
    }
}
