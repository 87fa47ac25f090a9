import Foundation

/// The counters every process running the engine publishes (STATS_DIR).
public enum LiveStats {
    public static let defaultDirectory = "/dev/shm/swiftasync"

    public struct Process {
        public let pid: Int32
        public let stats: EngineStats
        public var command: String { stats.text.split(separator: " ").first { $0.hasPrefix("command=") }.map { String($0.dropFirst(8)) } ?? "?" }
    }

    /// Live processes' reports (files of processes that are gone are skipped), by pid.
    public static func read(directory: String = defaultDirectory, pid: Int32? = nil) -> [Process] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> Process? in
            guard name.hasSuffix(".stats"), let filePid = Int32(name.dropLast(6)),
                  pid == nil || pid == filePid, let started = runningSince(filePid),
                  let text = completeReport("\(directory)/\(name)") else { return nil }
            let stats = EngineStats(parsing: text)
            // A file left by a process that is gone, whose pid was reused since.
            guard stats.header["start"] == started else { return nil }
            return Process(pid: filePid, stats: stats)
        }.sorted { $0.pid < $1.pid }
    }

    /// The file's report, read again if a write was under way (no `end` line).
    static func completeReport(_ path: String) -> String? {
        for _ in 0..<5 {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            if text.hasSuffix("end\n") { return text }
            usleep(2_000)
        }
        return nil
    }

    /// The fields of /proc/<pid>/stat after the command name: state first,
    /// then the parent's pid, ... (field 3 onwards of proc(5)).
    public static func statFields(_ pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// The start time of a running (not zombie) process, as its report gives it.
    static func runningSince(_ pid: Int32) -> Int? {
        guard let fields = statFields(pid), fields.count > 19, fields[0] != "Z" else { return nil }
        return Int(fields[19])
    }

    /// Sums of every algorithm's counters over processes.
    public static func totals(_ processes: [Process]) -> [String: [String: Int]] {
        var totals: [String: [String: Int]] = [:]
        for process in processes {
            for (algorithm, counters) in process.stats.algorithms {
                for (name, value) in counters { totals[algorithm, default: [:]][name, default: 0] += value }
            }
        }
        return totals
    }
}
