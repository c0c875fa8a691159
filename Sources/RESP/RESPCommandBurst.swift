/// The complete commands at the front of a read buffer, parsed in one pass and then taken one
/// at a time: kv-stored looks at a pipelined burst's keys before it runs the burst (to prefetch
/// them), and each command is still parsed only once.
///
/// Only small commands join a burst, and a burst stops at the first thing that is not a whole
/// command (an incomplete one, a blank line, a protocol error): the caller's own parse handles
/// those where they stand, in order, so errors and partial commands behave exactly as without
/// bursts. Bounded: at most `capacity` commands of at most `maxArguments` arguments each.
public struct RESPCommandBurst {
    /// Most arguments of a command that joins a burst (a larger one is parsed on its own).
    public static let maxArguments = 8

    private struct Command {
        var consumed: Int
        /// The command's arguments in `ranges`.
        var arguments: Range<Int>
    }

    private var commands: [Command] = []
    /// Argument ranges of every command, relative to the buffer's start when the burst was made.
    private var ranges: [Range<Int>] = []
    private var scratch: [Range<Int>] = []
    private var next = 0
    /// Bytes of the burst taken so far: the buffer's start has moved on by this much.
    private var taken = 0

    public init() {}

    /// Commands not yet taken.
    public var count: Int { commands.count - next }

    /// Parses up to `capacity` whole commands at the start of `bytes`, replacing the burst.
    public mutating func fill(_ bytes: UnsafeRawBufferPointer, limits: RESPLimits, capacity: Int) {
        clear()
        var offset = 0
        while commands.count < capacity, offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            guard case .command(let consumed)? = try? RESPCommandParser.parse(rest, limits: limits, arguments: &scratch),
                  scratch.count <= Self.maxArguments else { break }
            let first = ranges.count
            for range in scratch { ranges.append(range.lowerBound + offset..<range.upperBound + offset) }
            commands.append(Command(consumed: consumed, arguments: first..<ranges.count))
            offset += consumed
        }
        // A large command was parsed to be turned away: its ranges' memory is not kept.
        if scratch.capacity > 4 * Self.maxArguments { scratch = [] }
    }

    /// The range of argument `index` of the `position`-th command not yet taken, relative to the
    /// buffer's current start; nil past the command's arguments.
    public func argument(_ index: Int, ofCommand position: Int) -> Range<Int>? {
        let command = commands[next + position]
        guard index < command.arguments.count else { return nil }
        let range = ranges[command.arguments.lowerBound + index]
        return range.lowerBound - taken..<range.upperBound - taken
    }

    /// Takes the next command: writes its argument ranges, relative to the buffer's current start,
    /// into `arguments` and returns its size in bytes (what the caller then consumes); nil when
    /// the burst is used up.
    public mutating func take(into arguments: inout [Range<Int>]) -> Int? {
        guard next < commands.count else { return nil }
        let command = commands[next]
        arguments.removeAll(keepingCapacity: true)
        for range in ranges[command.arguments] { arguments.append(range.lowerBound - taken..<range.upperBound - taken) }
        next += 1
        taken += command.consumed
        return command.consumed
    }

    /// Drops what was not taken (the buffer's bytes were moved or replaced).
    public mutating func clear() {
        commands.removeAll(keepingCapacity: true)
        ranges.removeAll(keepingCapacity: true)
        next = 0
        taken = 0
    }
}
