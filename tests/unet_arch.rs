//! The network's layout: the paper's parameter count and FLOPs, names as guided-diffusion's.
use tomodiff::nn::{Arch, UNetConfig};

#[test]
fn paper_preset_counts() {
    let a = Arch::new(&UNetConfig::paper());
    assert_eq!(a.param_count(), 68_590_209);
    let gflop = a.total_flops() / 1e9;
    assert!((gflop / 228.0 - 1.0).abs() < 0.01, "{gflop} GFLOP per 32^3 patch");
    let mut c = UNetConfig::paper();
    c.patch = [32, 64, 64];
    let gflop = Arch::new(&c).total_flops() / 1e9;
    assert!((gflop / 927.0 - 1.0).abs() < 0.01, "{gflop} GFLOP per 64x64x32 patch");
    // Attention at ds 8 instead of 4: the same parameters (docs/METHOD.md).
    c.attention_ds = vec![8];
    assert_eq!(Arch::new(&c).param_count(), 68_590_209);
}

#[test]
fn tiny_preset_counts() {
    let a = Arch::new(&UNetConfig::tiny());
    let p = a.param_count();
    let g = a.total_flops() / 1e9;
    assert_eq!(p, 734_065);
    assert!((g - 1.056).abs() < 0.01, "{g}");
}

#[test]
fn parameter_names_follow_guided_diffusion() {
    let names: Vec<String> = Arch::new(&UNetConfig::paper()).params().into_iter().map(|p| p.name).collect();
    for n in [
        "time_embed.0.weight",
        "input_blocks.0.0.weight",
        "input_blocks.1.0.in_layers.2.weight",
        "input_blocks.1.0.emb_layers.1.weight",
        "input_blocks.3.0.op.weight",
        "input_blocks.4.0.skip_connection.weight",
        "input_blocks.7.1.qkv.weight",
        "middle_block.1.qkv.weight",
        "middle_block.2.out_layers.3.bias",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "out.2.weight",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing");
    }
    assert_eq!(names.len(), names.iter().collect::<std::collections::HashSet<_>>().len(), "names are unique");
}

#[test]
fn bad_configs_are_errors() {
    let mut c = UNetConfig::tiny();
    c.patch = [16, 16, 14];
    assert!(c.validate().unwrap_err().to_string().contains("patch x = 14"));
    let mut c = UNetConfig::tiny();
    c.norm_groups = 5;
    assert!(c.validate().unwrap_err().to_string().contains("norm_groups"));
    assert!(UNetConfig::load("nonexistent.json").is_err());
}

#[test]
fn heads_by_size_or_by_count() {
    use tomodiff::nn::Block;
    let heads = |c: &UNetConfig| -> Vec<(usize, usize)> {
        let a = Arch::new(c);
        let blocks = a.input_blocks.iter().flatten().chain(&a.middle).chain(a.output_blocks.iter().flatten());
        blocks.filter_map(|b| if let Block::Attn { c, heads, .. } = b { Some((*c, *heads)) } else { None }).collect()
    };
    // The paper preset: 256 channels at factor 4 and in the middle, 64 per head.
    assert!(heads(&UNetConfig::paper()).iter().all(|&(c, h)| c == 256 && h == 4));
    let fixed = UNetConfig { num_heads: Some(2), ..UNetConfig::paper() };
    fixed.validate().unwrap();
    assert!(heads(&fixed).iter().all(|&(_, h)| h == 2));
    let json = serde_json::to_string(&fixed).unwrap();
    assert_eq!(serde_json::from_str::<UNetConfig>(&json).unwrap(), fixed);
    // Channels that do not split, a zero count, neither stated: config errors naming the field.
    let bad = UNetConfig { num_heads: Some(3), ..UNetConfig::paper() };
    assert!(bad.validate().unwrap_err().to_string().contains("by num_heads = 3"));
    let bad = UNetConfig { head_channels: 48, ..UNetConfig::paper() };
    assert!(bad.validate().unwrap_err().to_string().contains("256 channels does not split by head_channels = 48"));
    let bad = UNetConfig { num_heads: Some(0), ..UNetConfig::paper() };
    assert!(bad.validate().unwrap_err().to_string().contains("num_heads must be positive"));
    let bad = UNetConfig { head_channels: 0, ..UNetConfig::paper() };
    assert!(bad.validate().unwrap_err().to_string().contains("or give num_heads"));
}
