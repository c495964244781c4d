/*
 * The JSON description of a loaded app, as the HTTP API and `sandctl status` show it: grains with
 * their effective settings (defaults filled in) and workflows with the compiled graph (next,
 * preds, joins, catch, retry, the result step), in app.yaml order.
 */
#include "sand/workflow.h"

#include <jansson.h>
#include <stdlib.h>

static json_t *grain_json(const sand_grain_t *g)
{
    json_t *o = json_pack("{s:s, s:s, s:s?, s:s?, s:I, s:I, s:I, s:i}", "name", g->name, "runtime",
                          sand_runtime_name(g->runtime), "code", g->code, "handler", g->handler,
                          "timeout_ms", (json_int_t)g->timeout_ms, "memory", (json_int_t)g->memory,
                          "concurrency", (json_int_t)g->concurrency, "line", g->line);
    if (o && g->jvm_options && json_object_set_new(o, "jvm_options", json_string(g->jvm_options)))
        json_decref(o), o = NULL;
    return o;
}

static json_t *names_json(sand_step_t *const *steps, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_string(steps[i]->name)) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *step_json(const sand_step_t *s)
{
    return json_pack("{s:s, s:s?, s:o?, s:o?, s:b, s:b, s:s?, s:{s:i, s:I}, s:i}", "name", s->name,
                     "grain", s->grain ? s->grain->name : NULL, "next",
                     names_json(s->next, s->n_next), "preds", names_json(s->preds, s->n_preds),
                     "join", s->n_preds > 1, "terminal", s->terminal, "catch",
                     s->catch_step ? s->catch_step->name : NULL, "retry", "max", s->retry_max,
                     "backoff_ms", (json_int_t)s->retry_backoff_ms, "line", s->line);
}

static json_t *workflow_json(const sand_workflow_t *wf)
{
    json_t *steps = json_array();
    for (size_t i = 0; steps && i < wf->n_steps; i++) {
        if (json_array_append_new(steps, step_json(wf->steps[i])) < 0) {
            json_decref(steps);
            return NULL;
        }
    }
    return json_pack("{s:s, s:s?, s:s?, s:I, s:o?, s:i}", "name", wf->name, "start",
                     wf->start ? wf->start->name : NULL, "result",
                     wf->result ? wf->result->name : NULL, "timeout_ms", (json_int_t)wf->timeout_ms,
                     "steps", steps, "line", wf->line);
}

int sand_app_describe_json(const sand_app_t *app, sand_bytes_t *out)
{
    json_t *grains = json_array(), *wfs = json_array(), *root = NULL;
    int rc = SAND_ENOMEM;
    for (size_t i = 0; grains && i < app->n_grains; i++)
        if (json_array_append_new(grains, grain_json(app->grains[i])) < 0)
            goto out;
    for (size_t i = 0; wfs && i < app->n_workflows; i++)
        if (json_array_append_new(wfs, workflow_json(app->workflows[i])) < 0)
            goto out;
    if (!grains || !wfs)
        goto out;
    root = json_pack("{s:s, s:O, s:O}", "app", app->name, "grains", grains, "workflows", wfs);
    if (!root)
        goto out;
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        goto out;
    rc = sand_bytes_appends(out, text);
    free(text);
out:
    json_decref(root);
    json_decref(grains);
    json_decref(wfs);
    return rc;
}
