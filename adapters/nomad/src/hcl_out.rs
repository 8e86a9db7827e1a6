//! The HCL form of a [`Job`], built with hcl-rs' structure builders (no string templates).

use hcl::{Block, Body, Expression};

use crate::job::{go_duration, Check, Job, Task};

pub fn to_hcl(job: &Job) -> String {
    let update = Block::builder("update")
        .add_attribute(("max_parallel", 1))
        .add_attribute(("health_check", "checks"))
        .add_attribute(("min_healthy_time", go_duration(job.update.min_healthy_time)))
        .add_attribute(("healthy_deadline", go_duration(job.update.healthy_deadline)))
        .add_attribute((
            "progress_deadline",
            go_duration(job.update.progress_deadline),
        ))
        .add_attribute(("auto_revert", true))
        .build();
    let mut network = Block::builder("network");
    if job.group.bridge {
        network = network.add_attribute(("mode", "bridge"));
    }
    let network = network
        .add_blocks(job.group.ports.iter().map(|(label, to)| {
            Block::builder("port")
                .add_label(label.as_str())
                .add_attribute(("to", i64::from(*to)))
                .build()
        }))
        .build();
    let group = Block::builder("group")
        .add_label(job.group.name.as_str())
        .add_attribute(("count", i64::from(job.group.count)))
        .add_block(network)
        .add_blocks(job.group.tasks.iter().map(task))
        .build();
    let body = Body::builder()
        .add_block(
            Block::builder("job")
                .add_label(job.name.as_str())
                .add_attribute(("type", "service"))
                .add_block(update)
                .add_block(group)
                .build(),
        )
        .build();
    hcl::to_string(&body).expect("an HCL body built from plain values formats")
}

fn strings(v: &[String]) -> Expression {
    Expression::from(
        v.iter()
            .map(|s| Expression::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

fn task(t: &Task) -> Block {
    let mut config = Block::builder("config").add_attribute(("image", t.image.as_str()));
    if !t.entrypoint.is_empty() {
        config = config.add_attribute(("entrypoint", strings(&t.entrypoint)));
    }
    if !t.args.is_empty() {
        config = config.add_attribute(("args", strings(&t.args)));
    }
    if !t.ports.is_empty() {
        config = config.add_attribute(("ports", strings(&t.ports)));
    }
    let mut b = Block::builder("task")
        .add_label(t.name.as_str())
        .add_attribute(("driver", "docker"))
        .add_attribute(("kill_signal", t.stop.kill_signal.as_str()))
        .add_attribute(("kill_timeout", go_duration(t.stop.kill_timeout)))
        .add_attribute(("shutdown_delay", go_duration(t.stop.shutdown_delay)));
    if t.sidecar {
        b = b.add_block(
            Block::builder("lifecycle")
                .add_attribute(("hook", "prestart"))
                .add_attribute(("sidecar", true))
                .build(),
        );
    }
    b = b.add_block(config.build());
    if !t.env.is_empty() {
        b = b.add_block(
            Block::builder("env")
                .add_attributes(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .build(),
        );
    }
    for tpl in &t.templates {
        let mut block = Block::builder("template")
            .add_attribute(("destination", tpl.destination.as_str()))
            .add_attribute(("change_mode", "restart"));
        if tpl.env {
            block = block.add_attribute(("env", true));
        }
        if let Some((left, right)) = &tpl.delimiters {
            block = block
                .add_attribute(("left_delimiter", left.as_str()))
                .add_attribute(("right_delimiter", right.as_str()));
        }
        b = b.add_block(block.add_attribute(("data", tpl.data.as_str())).build());
    }
    for s in &t.services {
        b = b.add_block(
            Block::builder("service")
                .add_attribute(("name", s.name.as_str()))
                .add_attribute(("provider", s.provider.as_str()))
                .add_attribute(("port", s.port_label.as_str()))
                .add_blocks(s.checks.iter().map(check))
                .build(),
        );
    }
    b.build()
}

fn check(c: &Check) -> Block {
    let mut b = Block::builder("check")
        .add_attribute(("name", c.name.as_str()))
        .add_attribute(("type", "http"))
        .add_attribute(("path", c.path.as_str()));
    if let Some(port) = &c.port {
        b = b.add_attribute(("port", port.as_str()));
    }
    b = b
        .add_attribute(("interval", go_duration(c.interval)))
        .add_attribute(("timeout", go_duration(c.timeout)));
    if let Some(u) = &c.on_update {
        b = b.add_attribute(("on_update", u.as_str()));
    }
    if c.failures_before_critical > 0 {
        b = b.add_attribute((
            "failures_before_critical",
            i64::from(c.failures_before_critical),
        ));
    }
    if c.success_before_passing > 0 {
        b = b.add_attribute((
            "success_before_passing",
            i64::from(c.success_before_passing),
        ));
    }
    if let Some(r) = &c.check_restart {
        let mut cr = Block::builder("check_restart")
            .add_attribute(("limit", i64::from(r.limit)))
            .add_attribute(("grace", go_duration(r.grace)));
        if r.ignore_warnings {
            cr = cr.add_attribute(("ignore_warnings", true));
        }
        b = b.add_block(cr.build());
    }
    b.build()
}
