/// Which side of the comparison a run measures.
enum Implementation: String, Sendable, CaseIterable {
    case c = "C"
    case swift = "Swift"

    /// From a command-line name, in any case.
    init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else { return nil }
        self = match
    }
}
