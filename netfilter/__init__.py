"""tlsgw's firewall rules: a typed model, the steering plan, and the backends that apply it.

    ruleset = plan.steering(cfg, bridge_mac)    # GatewayConfig -> Ruleset (pure)
    script = render_nft.render(ruleset)         # Ruleset -> nft script (pure, golden-tested)
    backend.check(ruleset); backend.apply(ruleset)   # atomic; only tlsgw's own tables
"""
