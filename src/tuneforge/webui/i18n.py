"""Every string the web UI shows, in English and Chinese (简体中文). A page asks `text(key, lang)`; a key
missing from either language is a test failure (tests/test_webui_i18n.py), so no string is left untranslated."""

from __future__ import annotations

LANGS = ("en", "zh")
LANG_NAMES = {"en": "English", "zh": "中文"}

STRINGS: dict[str, tuple[str, str]] = {
    # page frame
    "title": ("tuneforge: fine-tune pretrained transformers", "tuneforge：微调预训练 Transformer 模型"),
    "subtitle": (
        "Every button here runs the `tuneforge` command line; every table is read from the run directories "
        "under **{runs}**.",
        "这里的每个按钮都运行 `tuneforge` 命令行；每张表都读取自 **{runs}** 下的运行目录。",
    ),
    "language": ("Language", "语言"),
    "tab_train": ("Train", "训练"),
    "tab_runs": ("Runs", "运行记录"),
    "tab_data": ("Data", "数据"),
    "tab_compare": ("Compare", "对比"),
    "tab_search": ("Search", "超参搜索"),
    "tab_chat": ("Chat", "对话"),
    "tab_predict": ("Predict", "预测"),
    "tab_export": ("Export and serve", "导出与部署"),
    # train page
    "load_config": ("Shipped or saved config", "内置或已保存的配置"),
    "upload_config": ("…or upload a YAML", "…或上传 YAML 文件"),
    "load": ("Load", "加载"),
    "model": ("Model (builtin alias or local directory)", "模型（内置别名或本地目录）"),
    "train_data": ("Training data (builtin, file or folder)", "训练数据（内置、文件或文件夹）"),
    "task": ("Task (what is learned)", "任务（学习什么）"),
    "method": ("Method (which parameters learn)", "方法（哪些参数参与训练）"),
    "preview": ("Preview data", "预览数据"),
    "section_model": ("Model settings", "模型设置"),
    "section_data": ("Data settings", "数据设置"),
    "section_task": ("Task settings", "任务设置"),
    "section_method": ("Method settings", "方法设置"),
    "section_train": ("Training", "训练参数"),
    "section_distill": ("Distillation", "知识蒸馏"),
    "section_eval": ("Evaluation", "评估"),
    "section_output": ("Output", "输出"),
    "yaml_preview": ("Config that will run (YAML)", "将要运行的配置（YAML）"),
    "cli_equivalent": ("The same run from a shell", "在命令行中运行同样的任务"),
    "run_name": ("Run name (its directory under the runs folder)", "运行名称（运行目录下的文件夹名）"),
    "validate": ("Validate", "校验"),
    "save_yaml": ("Save YAML", "保存 YAML"),
    "start": ("Start training", "开始训练"),
    "saved_to": ("Saved to {path}", "已保存到 {path}"),
    "loaded": ("Loaded {path}.", "已加载 {path}。"),
    "valid": ("The config is valid.", "配置有效。"),
    "invalid": ("{n} problem(s) in the config:", "配置中有 {n} 处问题："),
    "started": (
        "Started **{run}** (PID {pid}): follow it on the Runs page.",
        "已开始 **{run}**（PID {pid}），请在“运行记录”页查看进度。",
    ),
    "columns": ("Columns", "列"),
    "text_column_is": ("Text column", "文本列"),
    "label_column_is": ("Label column", "标签列"),
    "labels": ("Labels", "标签"),
    "rows": ("rows", "行"),
    "guessed": ("guessed", "自动识别"),
    # runs page
    "refresh": ("Refresh", "刷新"),
    "runs_table": ("Runs (started here or from the command line)", "全部运行（网页或命令行启动）"),
    "run": ("Run", "运行"),
    "state": ("State", "状态"),
    "metric": ("Metric", "指标"),
    "value": ("Value", "数值"),
    "age": ("Age", "时间"),
    "stop": ("Stop", "停止"),
    "resume": ("Resume", "继续训练"),
    "curves": ("Loss and metric curves", "损失与指标曲线"),
    "log": ("Log (last lines)", "日志（最后几行）"),
    "report": ("Evaluation report", "评估报告"),
    "confusion": ("Confusion matrix", "混淆矩阵"),
    "loss_curve": ("Loss curve", "损失曲线"),
    "no_run": ("Pick a run.", "请选择一个运行。"),
    "no_report": (
        "No evaluation report yet (it is written when the run completes).",
        "还没有评估报告（运行完成后生成）。",
    ),
    "stopped_msg": ("{run} is now {state}.", "{run} 当前状态：{state}。"),
    "resumed_msg": ("Resuming {run} (PID {pid}).", "正在继续 {run}（PID {pid}）。"),
    # data page
    "data_source": ("A data file, builtin data set or run config", "数据文件、内置数据集或运行配置"),
    "overrides": ("Overrides (key=value, one per line)", "覆盖参数（key=value，每行一个）"),
    "inspect": ("Inspect", "分析数据"),
    "plots": ("Plots", "图表"),
    # compare page
    "pick_runs": ("Runs to compare", "要对比的运行"),
    "build_report": ("Build report", "生成对比报告"),
    # search page
    "space": ("Search space (YAML: config keys and values to try)", "搜索空间（YAML：要尝试的配置项与取值）"),
    "space_file": ("Shipped search space", "内置搜索空间"),
    "trials": ("Trials", "试验次数"),
    "study_name": ("Study name", "研究名称"),
    "start_search": ("Start search (uses the Train page's config)", "开始搜索（使用“训练”页的配置）"),
    "study": ("Study", "研究"),
    "trials_table": ("Trials", "试验列表"),
    "search_started": ("Started study **{study}** (PID {pid}).", "已开始研究 **{study}**（PID {pid}）。"),
    # chat page
    "chat_model": ("Chat with (a causal-LM run or builtin model)", "对话模型（因果语言模型运行或内置模型）"),
    "system_prompt": ("System prompt", "系统提示词"),
    "temperature": ("Temperature", "温度"),
    "max_new_tokens": ("Max new tokens", "最大生成长度"),
    "message": ("Message", "消息"),
    "send": ("Send", "发送"),
    "reset": ("Reset", "清空对话"),
    "chatbot": ("Conversation", "对话"),
    # predict page
    "predict_run": ("Classifier run", "分类模型运行"),
    "texts": ("Texts, one per line", "文本，每行一条"),
    "images": ("Or images (image classifier runs)", "或图像（图像分类运行）"),
    "score_prompt": (
        "Prompt (reward-model runs: each line above is scored as an answer to it)",
        "提示词（奖励模型运行：上面的每一行作为对它的回答来打分）",
    ),
    "predict": ("Predict", "预测"),
    "predictions": ("Predictions", "预测结果"),
    "probabilities": ("Probabilities", "概率"),
    "text": ("Text", "文本"),
    "label": ("Label", "标签"),
    "confidence": ("Confidence", "置信度"),
    # export and serve
    "export_run": ("Run to export or serve", "要导出或部署的运行"),
    "format": ("Export format", "导出格式"),
    "export": ("Export", "导出"),
    "parity": ("Parity with the trained model and cost", "与训练模型的一致性及开销"),
    "port": ("Port", "端口"),
    "serve_start": ("Start server", "启动服务"),
    "serve_stop": ("Stop server", "停止服务"),
    "snippet": ("Call it", "调用方式"),
    "serving": ("Serving {run} at {url} (PID {pid}).", "正在 {url} 部署 {run}（PID {pid}）。"),
    "not_serving": ("No server running.", "没有正在运行的服务。"),
    "exported": ("Exported to {path}.", "已导出到 {path}。"),
    # messages
    "error": ("Error", "错误"),
    "working": ("Working…", "处理中…"),
}


def text(key: str, lang: str = "en", **fmt) -> str:
    """The string `key` in `lang` (English when the language is unknown), formatted with `fmt`."""
    en, zh = STRINGS[key]
    s = zh if lang == "zh" else en
    return s.format(**fmt) if fmt else s
