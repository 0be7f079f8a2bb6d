//! placeholder while the workspace is bootstrapped
