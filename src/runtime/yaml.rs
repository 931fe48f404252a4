//! How every YAML file this program reads is parsed (the worker-queue file, the webhook
//! policy, pods for `mutate`): YAML 1.2 core schema as `serde_yaml` read it (`yes` and `0755`
//! stay text), merge keys (`<<`) expanded, duplicate keys refused, one-line errors without a
//! source snippet (files may be large; messages stay one line and name the line).

/// The serde-saphyr options for every YAML file.
pub fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.with_snippet = false;
    options
}
