import Foundation
import XCTest

/// The README and docs/: every relative link and image resolves to a file of
/// the repository, every `#anchor` to a heading of its page (as GitHub makes
/// them), every page under docs/ says first what it covers and is reachable
/// from the README.
final class DocumentationTests: XCTestCase {
    let root = Commands.repositoryRoot

    var pages: [String] {
        let docs = ((try? FileManager.default.contentsOfDirectory(atPath: root + "/docs")) ?? [])
            .filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
        return ["README.md"] + docs
    }

    /// `[text](target)` and `![alt](target)`, outside code blocks.
    static func links(in text: String) -> [String] {
        var inCode = false, found: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") { inCode.toggle(); continue }
            if inCode { continue }
            let pattern = /\]\(([^)\s]+)\)/
            for match in line.matches(of: pattern) { found.append(String(match.1)) }
        }
        return found
    }

    /// GitHub's anchor of a heading: lower case, spaces to hyphens, punctuation dropped.
    static func anchor(_ heading: String) -> String {
        String(heading.lowercased().compactMap { character -> Character? in
            if character == " " { return "-" }
            if character.isLetter || character.isNumber || character == "-" || character == "_" { return character }
            return nil
        })
    }

    static func anchors(in text: String) -> Set<String> {
        var inCode = false, found: Set<String> = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("```") { inCode.toggle(); continue }
            guard !inCode, line.hasPrefix("#") else { continue }
            found.insert(anchor(String(line.drop { $0 == "#" }.drop { $0 == " " })))
        }
        return found
    }

    func testEveryLinkResolves() throws {
        var checked = 0
        for page in pages {
            let text = try String(contentsOfFile: "\(root)/\(page)", encoding: .utf8)
            let directory = (page as NSString).deletingLastPathComponent
            for link in Self.links(in: text) where !link.contains("://") && !link.hasPrefix("mailto:") {
                let parts = link.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let target = parts[0].isEmpty ? page
                    : ((directory.isEmpty ? parts[0] : "\(directory)/\(parts[0])") as NSString).standardizingPath
                XCTAssertTrue(FileManager.default.fileExists(atPath: "\(root)/\(target)"), "\(page): \(link) (no \(target))")
                if parts.count == 2, target.hasSuffix(".md"),
                   let linked = try? String(contentsOfFile: "\(root)/\(target)", encoding: .utf8) {
                    XCTAssertTrue(Self.anchors(in: linked).contains(parts[1]), "\(page): \(link) (no heading #\(parts[1]) in \(target))")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 20, "the pages link to each other")
    }

    func testEveryPageSaysWhatItCoversAndIsLinkedFromTheReadme() throws {
        let readme = try String(contentsOfFile: "\(root)/README.md", encoding: .utf8)
        let linked = Set(Self.links(in: readme))
        for page in pages.dropFirst() {
            let text = try String(contentsOfFile: "\(root)/\(page)", encoding: .utf8)
            let paragraphs = text.components(separatedBy: "\n\n")
            XCTAssertTrue(paragraphs.first?.hasPrefix("# ") ?? false, "\(page) starts with its title")
            XCTAssertGreaterThan(paragraphs.count > 1 ? paragraphs[1].count : 0, 40, "\(page): what it covers, first")
            XCTAssertTrue(linked.contains(page), "the README links \(page)")
        }
    }
}
