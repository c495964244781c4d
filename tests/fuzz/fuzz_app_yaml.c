/*
 * libFuzzer target for the app.yaml loader: any byte string goes through sand_app_load_text (no
 * bundle directory, so only the YAML and the model are exercised). Besides crashes and sanitizer
 * reports, it aborts when the loader breaks its own contract: a refusal without a diagnostic,
 * or an accepted app whose graph is inconsistent (preds not mirroring next, a missing or
 * non-terminal result step, indexes out of place, a join as a catch target).
 */
#include "sand/workflow.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_workflow(const sand_workflow_t *wf)
{
    if (!wf->start || !wf->result || !wf->result->terminal || wf->n_steps == 0)
        abort();
    for (size_t i = 0; i < wf->n_steps; i++) {
        const sand_step_t *s = wf->steps[i];
        if (s->index != (int)i || !s->grain || s->terminal != (s->n_next == 0))
            abort();
        if (sand_workflow_step(wf, s->name) != s)
            abort();
        if (s->catch_step && (s->catch_step->n_preds > 1 || s->catch_step == s))
            abort();
        if (s->retry_max < 0 || s->retry_max > 10 || s->retry_backoff_ms < 0)
            abort();
        for (size_t j = 0; j < s->n_next; j++) {
            const sand_step_t *t = s->next[j];
            size_t back = 0;
            for (size_t k = 0; k < t->n_preds; k++)
                back += t->preds[k] == s;
            if (back != 1)
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sand_diags_t d;
    sand_diags_init(&d);
    sand_app_t *app = NULL;
    sand_err err = {0};
    int rc = sand_app_load_text((const char *)data, size, NULL, NULL, &app, &d, &err);
    if (rc == SAND_EINVAL && (d.len == 0 || app))
        abort();
    if (rc == 0) {
        if (!app || d.len != 0 || app->n_grains == 0 || !app->name[0])
            abort();
        for (size_t i = 0; i < app->n_grains; i++) {
            const sand_grain_t *g = app->grains[i];
            if (sand_app_grain(app, g->name) != g || !g->code || !g->handler ||
                g->timeout_ms <= 0 || g->concurrency < 1 || g->concurrency > 10000)
                abort();
        }
        for (size_t i = 0; i < app->n_workflows; i++)
            check_workflow(app->workflows[i]);
        sand_bytes_t out;
        sand_bytes_init(&out, 1 << 24);
        if (sand_app_describe_json(app, &out) < 0 || !out.data || out.data[0] != '{')
            abort();
        sand_bytes_release(&out);
    }
    sand_bytes_t text;
    sand_bytes_init(&text, 1 << 20);
    sand_diags_format(&d, "app.yaml", &text);
    sand_bytes_release(&text);
    sand_app_free(app);
    sand_diags_release(&d);
    return 0;
}
