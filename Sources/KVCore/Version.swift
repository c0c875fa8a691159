/// The version every executable reports with `--version`; CHANGELOG.md's newest entry carries
/// the same number (an end-to-end test compares them).
public enum KvServerVersion {
    public static let current = "0.17.0"
}
