#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Flushes standard output: a line printed into a pipe otherwise waits in the buffer, and a
/// process watching for it (a test, a supervisor) would wait with it. `fflush(nil)` flushes
/// every output stream, without touching the global `stdout`, which Swift 6 rejects as shared
/// mutable state.
func flushStandardOutput() {
    fflush(nil)
}
