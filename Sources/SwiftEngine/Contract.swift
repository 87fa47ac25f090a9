import CEngineShim
import Glibc

// The C shim's way into Swift: the functions swiftasync_shim.h declares as
// "implemented in Swift". Each only forwards to the runtime.

@_cdecl("sa_pool_prefers_inline")
func poolPrefersInline() -> Int32 {
    EngineRuntime.shared.prefersInline ? 1 : 0
}

@_cdecl("sa_pool_submit")
func poolSubmit(_ operation: UnsafeMutablePointer<sa_operation>) -> sa_submit_result {
    EngineRuntime.shared.submit(operation)
}

@_cdecl("sa_pool_run_and_wait")
func poolRunAndWait(_ operation: UnsafeMutablePointer<sa_operation>) -> Int32 {
    EngineRuntime.shared.runAndWait(operation) ? 1 : 0
}

@_cdecl("sa_stats_note_inline")
func statsNoteInline(_ algorithm: sa_algorithm, _ succeeded: Int32) {
    // Part of an operation a worker computes (counted there), not one of the application's.
    guard sa_worker_is_computing() == 0 else { return }
    EngineRuntime.shared.noteInline(algorithm, succeeded: succeeded != 0)
}

@_cdecl("sa_stats_note_records")
func statsNoteRecords(_ change: Int32) {
    EngineRuntime.shared.statistics.recordsAlive.wrappingAdd(Int(change), ordering: .relaxed)
}

@_cdecl("sa_stats_note_jobs_abandoned")
func statsNoteJobsAbandoned(_ count: Int32) {
    EngineRuntime.shared.statistics.jobsAbandoned.wrappingAdd(Int(count), ordering: .relaxed)
}

@_cdecl("sa_stats_note_wait_fd_refused")
func statsNoteWaitFDRefused() {
    EngineRuntime.shared.statistics.waitFDsRefused.increment()
}

@_cdecl("sa_pool_retire")
func poolRetire() {
    EngineRuntime.shared.retirePool()
}

@_cdecl("sa_engine_did_init")
func engineDidInit() {
    EngineRuntime.shared.engineDidInit()
}

@_cdecl("sa_engine_did_finish")
func engineDidFinish() {
    EngineRuntime.shared.engineDidFinish()
}

@_cdecl("sa_config_set")
func configSet(_ name: UnsafePointer<CChar>, _ value: Int) -> Int32 {
    EngineRuntime.shared.set(String(cString: name), to: value) ? 1 : 0
}

@_cdecl("sa_config_set_string")
func configSetString(_ name: UnsafePointer<CChar>, _ value: UnsafePointer<CChar>) -> Int32 {
    EngineRuntime.shared.set(String(cString: name), to: String(cString: value)) ? 1 : 0
}

@_cdecl("sa_stats_format")
func statsFormat(_ buffer: UnsafeMutablePointer<CChar>, _ capacity: Int) -> Int {
    let text = Array(EngineRuntime.shared.report().utf8)
    if capacity > 0 {
        let copied = min(text.count, capacity - 1)
        text.withUnsafeBufferPointer { bytes in
            UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress!, byteCount: copied)
        }
        buffer[copied] = 0
    }
    return text.count
}
