import Foundation
import Testing

/// Every ```swift block of the DocC articles (`Sources/*/*.docc/*.md`) and of README.md must
/// be compiled by a test: its lines must appear, in order and together, in some Swift file
/// under Tests/ (with any extra indentation of the whole block). A sample edited in the
/// documentation but not in its test, or the other way round, fails here, so the documented
/// code is the code that builds and runs against the broker (DocumentationExamples.swift in
/// CoreIntegrationTests and PatternsIntegrationTests, ReadmeTests, PatternsReadmeTests).
///
/// Exempt: manifest fragments, blocks whose first line is `// Package.swift`, which no test
/// target can compile. Doc comments in Sources are not checked.
@Suite("Documentation samples")
struct DocumentationSampleTests {
    /// The repository's root, from this file's path (Tests/RabbitMQTests/<this file>).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func everySwiftSampleIsCompiledByATest() throws {
        let documents = try Self.documentationFiles()
        #expect(documents.contains { $0.hasSuffix("README.md") })
        #expect(documents.contains { $0.hasSuffix("RabbitMQ.docc/GettingStarted.md") })
        let tests = try Self.testSources()
        var checked = 0
        for document in documents {
            let text = try String(contentsOf: Self.root.appendingPathComponent(document), encoding: .utf8)
            for sample in SwiftSample.all(in: text) where !sample.isManifest {
                checked += 1
                if !tests.contains(where: { sample.appears(in: $0) }) {
                    Issue.record(
                        "\(document):\(sample.line): this sample is not compiled by any test under Tests/ (first line: \(sample.lines[0]))"
                    )
                }
            }
        }
        #expect(checked > 20, "found only \(checked) samples: is the repository root right (\(Self.root.path))?")
    }

    @Test func aSampleMatchesIndentedAndNotOutOfOrder() {
        let text = ["Text.", "", "```swift", "  let a = 1", "", "  print(a)  ", "```"].joined(separator: "\n")
        let sample = SwiftSample.all(in: text)
        #expect(sample.count == 1)
        #expect(sample.first?.line == 3)
        #expect(sample.first?.lines == ["let a = 1", "", "print(a)"])
        let test = ["func f() {", "    let a = 1", "", "    print(a)", "}"]
        #expect(sample.first?.appears(in: test) == true)
        #expect(sample.first?.appears(in: ["let a = 1", "  print(a)"]) == false)
        #expect(sample.first?.appears(in: ["    let a = 1", "", "  print(a)"]) == false)
        #expect(SwiftSample.all(in: "```swift\n// Package.swift\ndependencies: []\n```").first?.isManifest == true)
    }

    /// The articles of every DocC catalog and README.md, relative to the root.
    static func documentationFiles() throws -> [String] {
        let files = FileManager.default
        var found = ["README.md"]
        for module in try files.contentsOfDirectory(atPath: root.appendingPathComponent("Sources").path).sorted() {
            let sources = "Sources/\(module)"
            for catalog in try files.contentsOfDirectory(atPath: root.appendingPathComponent(sources).path).sorted()
            where catalog.hasSuffix(".docc") {
                let folder = "\(sources)/\(catalog)"
                for article in try files.contentsOfDirectory(atPath: root.appendingPathComponent(folder).path).sorted()
                where article.hasSuffix(".md") {
                    found.append("\(folder)/\(article)")
                }
            }
        }
        return found
    }

    /// Every Swift file under Tests/ but this one, as lines without trailing white space.
    static func testSources() throws -> [[String]] {
        let tests = root.appendingPathComponent("Tests")
        guard let walk = FileManager.default.enumerator(atPath: tests.path) else { return [] }
        var sources: [[String]] = []
        while let path = walk.nextObject() as? String {
            guard path.hasSuffix(".swift"), path != "RabbitMQTests/DocumentationSampleTests.swift" else { continue }
            let text = try String(contentsOf: tests.appendingPathComponent(path), encoding: .utf8)
            sources.append(text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0).trimmingTrailingWhitespace })
        }
        return sources
    }
}

/// One ```swift block of a Markdown file: its lines without trailing white space and without
/// the indentation they share, leading and trailing empty lines dropped.
struct SwiftSample {
    /// The line of the opening fence, counted from 1.
    var line: Int
    var lines: [String]

    /// A Package.swift fragment: no test target can compile it.
    var isManifest: Bool { lines.first == "// Package.swift" }

    static func all(in markdown: String) -> [SwiftSample] {
        var samples: [SwiftSample] = []
        var open: (line: Int, lines: [String])?
        for (index, raw) in markdown.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw).trimmingTrailingWhitespace
            let fence = line.drop { $0 == " " }
            if var block = open {
                if fence == "```" {
                    samples.append(SwiftSample(line: block.line, lines: normalized(block.lines)))
                    open = nil
                } else {
                    block.lines.append(line)
                    open = block
                }
            } else if fence == "```swift" {
                open = (index + 1, [])
            }
        }
        return samples.filter { !$0.lines.isEmpty }
    }

    static func normalized(_ lines: [String]) -> [String] {
        var lines = lines
        while lines.first?.isEmpty == true { lines.removeFirst() }
        while lines.last?.isEmpty == true { lines.removeLast() }
        let indent = lines.filter { !$0.isEmpty }.map { $0.prefix { $0 == " " }.count }.min() ?? 0
        return lines.map { $0.isEmpty ? $0 : String($0.dropFirst(indent)) }
    }

    /// Whether these lines appear together in `source`, each with the same extra indentation.
    func appears(in source: [String]) -> Bool {
        guard let first = lines.first, source.count >= lines.count else { return false }
        for start in 0...(source.count - lines.count) where source[start].hasSuffix(first) {
            let indent = source[start].dropLast(first.count)
            guard indent.allSatisfy({ $0 == " " }) else { continue }
            if lines.indices.dropFirst().allSatisfy({ k in
                lines[k].isEmpty ? source[start + k].isEmpty : source[start + k] == indent + lines[k]
            }) {
                return true
            }
        }
        return false
    }
}

extension String {
    fileprivate var trimmingTrailingWhitespace: String {
        var end = endIndex
        while end > startIndex, self[index(before: end)].isWhitespace { end = index(before: end) }
        return String(self[..<end])
    }
}
