import Testing
@testable import KVCore

@Suite("JSON string writing")
struct JSONTextTests {
    @Test("escapes exactly quotes, backslashes and control characters")
    func escapes() {
        #expect(String(decoding: JSONText.quoted("a\"b\\c\nd\re\tf\u{1}g\u{1f}"), as: UTF8.self) == #""a\"b\\c\nd\re\tf\u0001g\u001f""#)
        #expect(String(decoding: JSONText.quoted("ключ é😀 \u{2028} /"), as: UTF8.self) == "\"ключ é😀 \u{2028} /\"")
        #expect(JSONText.quoted("") == Array("\"\"".utf8))
    }

    @Test("whatever the text, the strict reader reads back the same string")
    func roundTripsThroughTheReader() throws {
        var generator = SystemRandomNumberGenerator()
        let pool: [Unicode.Scalar] = ["a", "\"", "\\", "\n", "\u{0}", "\u{7}", "\u{1f}", "\u{7f}", "é", "\u{2028}", "😀", "/", " "]
        for _ in 0..<500 {
            let length = Int.random(in: 0...20, using: &generator)
            var text = ""
            for _ in 0..<length { text.unicodeScalars.append(pool.randomElement(using: &generator)!) }
            let document = try JSONReader().read(Array("{\"k\":".utf8) + JSONText.quoted(text) + Array("}".utf8))
            let value = try #require(document.root[member: "k"])
            #expect(document.string(value) == text, "\(Array(text.unicodeScalars))")
        }
    }
}
