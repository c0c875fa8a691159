import KVCore
import NIOCore
import RESP
import Testing
@testable import KVClient

/// Listing on a cluster without sockets: where a page starts, and what its `next` becomes.
@Suite("Cluster listing")
struct ClusterListingTests {
    /// Three masters: a owns 0-99 and 300-399, b 100-299, c 400-16383.
    var map: ClusterTopology {
        var map = ClusterTopology()
        let a = ClusterNode(host: "a", port: 1), b = ClusterNode(host: "b", port: 1), c = ClusterNode(host: "c", port: 1)
        for slot in 0..<ClusterTopology.slots {
            map.assign(slot: slot, to: slot < 100 || (300..<400).contains(slot) ? a : slot < 300 ? b : c)
        }
        return map
    }

    func page(_ cursor: RESPValue) -> RESPValue { .array([.null, cursor, .array([])]) }

    @Test("a listing starts at slot 0's master; next names the master being scanned and its SCAN cursor, then each master in the order of its first slot")
    func walk() throws {
        #expect(try ClusterListing.position(after: nil) == (0, Array("0".utf8)))
        #expect(try ClusterListing.position(after: Array("100:77".utf8)) == (100, Array("77".utf8)))
        #expect(try ClusterListing.position(after: Array("7:12:6b2f".utf8)) == (7, Array("12:6b2f".utf8)), "a split SCAN step's cursor")
        for bad in ["key", "100", "100:", ":5", "16384:0", "-1:0", "1:x", "99999:1", "1:A"] {
            #expect(throws: KVError.self, "\(bad)") { try ClusterListing.position(after: Array(bad.utf8)) }
        }
        #expect(ClusterListing.continued(page(.bulkString(ByteBuffer(string: "42"))), scanning: 0, topology: map) == page(.bulkString(ByteBuffer(string: "0:42"))))
        #expect(ClusterListing.continued(page(.null), scanning: 0, topology: map) == page(.bulkString(ByteBuffer(string: "100:0"))))
        #expect(ClusterListing.continued(page(.null), scanning: 350, topology: map) == page(.bulkString(ByteBuffer(string: "100:0"))),
                "any slot of a master stands for it")
        #expect(ClusterListing.continued(page(.null), scanning: 100, topology: map) == page(.bulkString(ByteBuffer(string: "400:0"))))
        #expect(ClusterListing.continued(page(.null), scanning: 400, topology: map) == page(.null), "after the last master: done")
        #expect(ClusterListing.continued(page(.null), scanning: 0, topology: nil) == .error(ByteBuffer(string: "the cluster's slot map is not known: list again")),
                "never done without knowing the masters")
    }
}
