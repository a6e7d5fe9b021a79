import Foundation

/// Built by scripts/fuzz.sh (`-sanitize=fuzzer,address -DRABBITMQ_FUZZING`): hands control
/// to libFuzzer. Built normally: runs every file given (or in the directories given) once,
/// so the committed corpus is a regression test in any build:
/// `swift run rabbitmq-fuzz Tests/FuzzCorpus`.
@main
enum FuzzMain {
    static func main() {
        #if RABBITMQ_FUZZING
        exit(runLibFuzzer())
        #else
        exit(runFiles(Array(CommandLine.arguments.dropFirst())))
        #endif
    }

    #if RABBITMQ_FUZZING
    private typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    private typealias RunDriver = @convention(c) (
        UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>, TestOneInput
    ) -> Int32

    /// SwiftPM names an executable's entry point after its module and points `main` at it,
    /// so libFuzzer's own `main` is not used: its driver is called instead, found at run
    /// time (scripts/fuzz.sh exports it; declaring a C function in Swift would need a C
    /// module or an unsafe silgen name).
    private static func runLibFuzzer() -> Int32 {
        guard let symbol = dlsym(nil, "LLVMFuzzerRunDriver") else {
            print("rabbitmq-fuzz: LLVMFuzzerRunDriver not found (build with -sanitize=fuzzer)")
            return 2
        }
        let driver = unsafeBitCast(symbol, to: RunDriver.self)
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        return driver(&argc, &argv, fuzzerTestOneInput)
    }
    #else
    private static func runFiles(_ arguments: [String]) -> Int32 {
        var files: [String] = []
        for argument in arguments {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) else {
                print("rabbitmq-fuzz: no such file or directory: \(argument)")
                return 2
            }
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
                files += names.sorted().map { argument + "/" + $0 }
            } else {
                files.append(argument)
            }
        }
        guard !files.isEmpty else {
            print("usage: rabbitmq-fuzz FILE_OR_DIRECTORY...   (runs each input once; scripts/fuzz.sh fuzzes)")
            return 2
        }
        var failures = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            if let failure = data.withUnsafeBytes({ fuzzOne($0) }) {
                print("FAIL \(file): \(failure)")
                failures += 1
            }
        }
        print("rabbitmq-fuzz: \(files.count) inputs, \(failures) failures")
        return failures == 0 ? 0 : 1
    }
    #endif
}

/// libFuzzer's entry: one input; a broken property is a crash it can minimise.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    if let failure = fuzzOne(bytes) { fatalError("fuzz property failed: \(failure)") }
    return 0
}
