//! Bank statement parsers (in progress).
