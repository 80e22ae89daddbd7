// The learning-rate schedule: linear warmup, then cosine or step decay, computed for every step.
#include "train/train_internal.h"

#include <math.h>
#include <string.h>

double bnl_schedule_lr(const bnl_schedule *s, int64_t t) {
    if (!s) return 0.0;
    if (t < 0) t = 0;
    double lr = s->base_lr;
    if (s->kind == BNL_SCHED_COSINE) {
        if (t >= s->warmup_steps && s->total_steps > s->warmup_steps) {
            double p = (double)(t - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
            if (p > 1.0) p = 1.0;
            lr = s->base_lr * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
        }
    } else {
        int64_t spe = s->steps_per_epoch > 0 ? s->steps_per_epoch : 1;
        int64_t epoch = t / spe, drops = 0;
        if (s->step_every > 0) {
            drops = epoch / s->step_every;
        } else {
            for (int i = 0; i < s->n_milestones; i++)
                if (epoch >= s->milestones[i]) drops++;
        }
        lr = s->base_lr * pow(s->gamma, (double)drops);
    }
    if (t < s->warmup_steps) lr *= (double)(t + 1) / (double)s->warmup_steps;
    return lr;
}

void tr_schedule_init(tr_run *r) {
    const bnl_train_config *cfg = r->cfg;
    bnl_schedule *s = &r->sched;
    s->kind = cfg->schedule;
    s->base_lr = cfg->lr;
    s->steps_per_epoch = r->spe;
    s->total_steps = r->total;
    s->warmup_steps = (int64_t)llround(cfg->warmup_epochs * (double)r->spe);
    s->step_every = cfg->step_every;
    s->n_milestones = cfg->n_milestones;
    memcpy(s->milestones, cfg->milestones, sizeof s->milestones);
    s->gamma = cfg->step_gamma;
}
