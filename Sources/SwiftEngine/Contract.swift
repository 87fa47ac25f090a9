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
    statsNoteInlineIn(0, algorithm, succeeded)
}

@_cdecl("sa_stats_note_inline_in")
func statsNoteInlineIn(_ pool: Int32, _ algorithm: sa_algorithm, _ succeeded: Int32) {
    // Part of an operation a worker computes (counted there), not one of the application's.
    guard sa_worker_is_computing() == 0 else { return }
    EngineRuntime.shared.noteInline(algorithm, inPool: pool, succeeded: succeeded != 0)
}

@_cdecl("sa_pool_register_key_store")
func poolRegisterKeyStore(_ name: UnsafePointer<CChar>) -> Int32 {
    EngineRuntime.shared.registerKeyStore(String(cString: name))
}

@_cdecl("sa_config_set_string_in")
func configSetStringIn(_ pool: Int32, _ name: UnsafePointer<CChar>, _ value: UnsafePointer<CChar>) -> Int32 {
    guard let store = EngineRuntime.shared.keyStore(pool) else { return 0 }
    return store.set(String(cString: name), to: String(cString: value)) ? 1 : 0
}

/// C strings of Configuration.sectionNames, made once and kept for the process.
nonisolated(unsafe) private let sectionNameStrings: [UnsafeMutablePointer<CChar>] = Configuration.sectionNames.map { strdup($0)! }

@_cdecl("sa_config_setting_name")
func configSettingName(_ index: Int32) -> UnsafePointer<CChar>? {
    guard index >= 0 && Int(index) < sectionNameStrings.count else { return nil }
    return UnsafePointer(sectionNameStrings[Int(index)])
}

@_cdecl("sa_stats_note_records")
func statsNoteRecords(_ change: Int32) {
    EngineRuntime.shared.statistics.recordsAlive.wrappingAdd(Int(change), ordering: .relaxed)
    // A record is freed after its worker's last change: at rest, the published count must catch up.
    EngineRuntime.shared.publisher.noteChange()
}

@_cdecl("sa_stats_note_jobs_abandoned")
func statsNoteJobsAbandoned(_ count: Int32) {
    EngineRuntime.shared.statistics.jobsAbandoned.wrappingAdd(Int(count), ordering: .relaxed)
    EngineRuntime.shared.publisher.noteChange()
}

@_cdecl("sa_stats_note_wait_fd_refused")
func statsNoteWaitFDRefused() {
    EngineRuntime.shared.statistics.waitFDsRefused.increment()
    EngineRuntime.shared.publisher.noteChange()
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
