"""One-bug submissions of project 3 and the exact scores the grader must give them.

Each mutant is (name, score, edits): text replacements (old, new) in the reference solution,
each old occurring exactly once there. A bug in a part costs exactly that part's points
(make_schedule 1, q_sample 1, eps_loss 2, p_sample_step 2, sample 1, train 3); a correct
variant keeps all 10.
"""

_LOOP = 'for t in range(len(schedule["beta"]), 0, -1):'
_LOSS = "return ((eps - model(q_sample(x0, t, schedule, eps), t)) ** 2).sum(1).mean()"
_T_DRAW = "t = torch.randint(1, T + 1, (len(x0),))"
_MEAN = "mean = (xt - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()"
_NOISE = "return mean + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * z"

MUTANTS = [
    # make_schedule (1 point)
    ("make_schedule: alpha_bar the cumulative product of beta", 9,
     [('"alpha_bar": torch.cumprod(alpha, 0)', '"alpha_bar": torch.cumprod(beta, 0)')]),
    ("make_schedule: T + 1 betas, the first dropped", 9,
     [("beta = torch.linspace(beta_1, beta_T, T)", "beta = torch.linspace(beta_1, beta_T, T + 1)[1:]")]),
    ("make_schedule: alpha_bar shifted by one step (alpha_bar_1 = 1)", 9,
     [('"alpha_bar": torch.cumprod(alpha, 0)', '"alpha_bar": torch.cat([torch.ones(1), torch.cumprod(alpha, 0)[:-1]])')]),
    # q_sample (1 point)
    ("q_sample: no square root on 1 - alpha_bar", 9,
     [("return ab.sqrt() * x0 + (1 - ab).sqrt() * eps", "return ab.sqrt() * x0 + (1 - ab) * eps")]),
    ("q_sample: no square root on alpha_bar", 9,
     [("return ab.sqrt() * x0 + (1 - ab).sqrt() * eps", "return ab * x0 + (1 - ab).sqrt() * eps")]),
    ("q_sample: the schedule indexed t, not t - 1", 9,
     [('ab = schedule["alpha_bar"][t - 1][:, None]', 'ab = schedule["alpha_bar"][t][:, None]')]),
    # eps_loss (2 points)
    ("eps_loss: t from randint(0, T), steps 0..T-1", 8,
     [(_T_DRAW, "t = torch.randint(0, T, (len(x0),))")]),
    ("eps_loss: t from randint(1, T), step T never drawn", 8,
     [(_T_DRAW, "t = torch.randint(1, T, (len(x0),))")]),
    ("eps_loss: one t for the whole batch", 8,
     [(_T_DRAW, "t = torch.randint(1, T + 1, (1,)).repeat(len(x0))")]),
    ("eps_loss: the target is x_0, not eps", 8,
     [(_LOSS, "return ((x0 - model(q_sample(x0, t, schedule, eps), t)) ** 2).sum(1).mean()")]),
    ("eps_loss: the target is fresh noise, not the eps in x_t", 8,
     [(_LOSS, "return ((torch.randn_like(x0) - model(q_sample(x0, t, schedule, eps), t)) ** 2).sum(1).mean()")]),
    ("eps_loss: absolute error, not squared", 8,
     [(_LOSS, "return (eps - model(q_sample(x0, t, schedule, eps), t)).abs().sum(1).mean()")]),
    ("eps_loss: summed over the batch, not averaged", 8,
     [(_LOSS, "return ((eps - model(q_sample(x0, t, schedule, eps), t)) ** 2).sum()")]),
    ("eps_loss: the prediction detached, no gradient for training", 8,
     [(_LOSS, "return ((eps - model(q_sample(x0, t, schedule, eps), t).detach()) ** 2).sum(1).mean()")]),
    # p_sample_step (2 points)
    ("p_sample_step: variance beta_t instead of beta_tilde_t", 8,
     [(_NOISE, "return mean + beta.sqrt() * z")]),
    ("p_sample_step: noise at t = 1 (alpha_bar_0 read at index -1)", 8,
     [('ab_prev = schedule["alpha_bar"][t - 2] if t > 1 else torch.ones(())', 'ab_prev = schedule["alpha_bar"][t - 2]')]),
    ("p_sample_step: + instead of - in the mean", 8,
     [(_MEAN, "mean = (xt + beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()")]),
    ("p_sample_step: no square root on alpha_t", 8,
     [(_MEAN, "mean = (xt - beta / (1 - ab).sqrt() * eps_hat) / alpha")]),
    ("p_sample_step: no square root on 1 - alpha_bar_t", 8,
     [(_MEAN, "mean = (xt - beta / (1 - ab) * eps_hat) / alpha.sqrt()")]),
    ("p_sample_step: the model asked at step t - 1", 8,
     [("torch.full((len(xt),), t, dtype=torch.long)", "torch.full((len(xt),), t - 1, dtype=torch.long)")]),
    # sample (1 point)
    ("sample: for t in reversed(range(T)), steps T-1..0", 9,
     [(_LOOP, 'for t in reversed(range(len(schedule["beta"]))):')]),
    ("sample: the last step (t = 1) skipped", 9,
     [(_LOOP, 'for t in range(len(schedule["beta"]), 1, -1):')]),
    ("sample: the loop starts at T - 1", 9,
     [(_LOOP, 'for t in range(len(schedule["beta"]) - 1, 0, -1):')]),
    ("sample: the loop runs forward, t = 1..T", 9,
     [(_LOOP, 'for t in range(1, len(schedule["beta"]) + 1):')]),
    ("sample: z = 0 at every step", 9,
     [("x = p_sample_step(model, x, t, schedule, torch.randn_like(x))",
       "x = p_sample_step(model, x, t, schedule, torch.zeros_like(x))")]),
    ("sample: one z drawn once, reused at every step", 9,
     [("    x = torch.randn(n, dim)\n", "    x = torch.randn(n, dim)\n    z = torch.randn_like(x)\n"),
      ("x = p_sample_step(model, x, t, schedule, torch.randn_like(x))", "x = p_sample_step(model, x, t, schedule, z)")]),
    ("sample: x_T = 0", 9,
     [("    x = torch.randn(n, dim)\n", "    x = torch.zeros(n, dim)\n")]),
    # train (3 points)
    ("train: 100 steps", 7, [("steps=3000", "steps=100")]),
    ("train: the loss's sign flipped (gradient ascent)", 7, [("        loss.backward()\n", "        (-loss).backward()\n")]),
    ("train: learning rate 1e-5", 7, [("lr=2e-3", "lr=1e-5")]),
    ("train: no optimizer step", 7, [("        opt.step()\n", "")]),
    # correct variants, written differently from the reference: full marks
    ("correct: eps_loss with the mean over coordinates (Ho et al.'s mean_flat)", 10,
     [(_LOSS, "return ((eps - model(q_sample(x0, t, schedule, eps), t)) ** 2).mean()")]),
    ("correct: eps_loss with t = randint(T) + 1", 10, [(_T_DRAW, "t = torch.randint(T, (len(x0),)) + 1")]),
    ("correct: make_schedule in float64", 10,
     [("beta = torch.linspace(beta_1, beta_T, T)", "beta = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)")]),
    ("correct: sample loop over reversed(range(1, T + 1))", 10,
     [(_LOOP, 'for t in reversed(range(1, len(schedule["beta"]) + 1)):')]),
    ("correct: sample passes z = 0 at the last step (t = 1), where it is multiplied by 0", 10,
     [("x = p_sample_step(model, x, t, schedule, torch.randn_like(x))",
       "x = p_sample_step(model, x, t, schedule, torch.randn_like(x) if t > 1 else torch.zeros_like(x))")]),
]
